"""``python -m tutor bench`` refuses options it cannot run with a message naming the option (issue 22,
finding 22's bench part): no traceback, exit code 2, nothing benchmarked."""
from __future__ import annotations

import pytest

from tutor.bench import cli


@pytest.mark.parametrize("argv, option", [(["--T", "10000000000"], "--T"), (["--T", "0"], "--T"),
                                          (["--impls", ","], "--impls"), (["--impls", ""], "--impls"),
                                          (["--device", "meta"], "--device"), (["--device", "nonsense"], "--device"),
                                          (["--max-gb", "nan"], "--max-gb"), (["--max-gb", "-1"], "--max-gb"),
                                          (["--peak-tflops", "inf"], "--peak-tflops")])
def test_bad_options_are_refused_by_name(argv, option, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err
