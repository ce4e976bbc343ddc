"""The question registry and the public names the grader and the authoring use: ``question`` /
``questions`` / ``notebook_questions`` (exercises.registry), ``judge``, ``watched``, ``withhold``,
``record_checks_with`` (exercises.problem), the notebook text of a question, and the hand-over of a
:class:`~tutor.exercises.sandbox.RemoteCall` to its own time limit."""
from __future__ import annotations

import pytest
import torch

from tutor import exercises
from tutor.exercises import problem, registry, sandbox


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTOR_PROGRESS_FILE", str(tmp_path / "progress.json"))


def test_the_package_forwards_the_registry():
    assert exercises.question is registry.question and exercises.questions is registry.questions
    assert exercises.notebook_questions is registry.notebook_questions and exercises.MODULES == registry.MODULES
    modules = registry.question_modules()
    assert [m.__name__ for m in modules] == [f"tutor.exercises.{name}" for name in registry.MODULES]
    per_notebook = exercises.notebook_questions()
    assert list(per_notebook) == [m.NUMBER for m in modules]
    assert [q for qs in per_notebook.values() for q in qs] == list(exercises.questions())
    assert all(q.id.startswith(number + ".q") for number, qs in per_notebook.items() for q in qs)


def test_judge_gives_the_verdict_and_records_and_shows_nothing(tmp_path, capsys):
    q = exercises.question("00.q2")
    assert q.judge(lambda T, window: T * (2 * window + 1)).status == "incorrect"
    assert q.judge(None).status == "not_attempted"
    assert exercises.question("00.q3").judge(1.5).status == "incorrect"
    assert capsys.readouterr().out == "" and not (tmp_path / "progress.json").exists()
    assert q.check(lambda T, window: 0).status == "incorrect"           # check() does both
    assert "00.q2" in capsys.readouterr().out and (tmp_path / "progress.json").exists()


def test_a_checker_that_breaks_is_a_verdict_not_an_exception(monkeypatch):
    q = exercises.question("00.q3")
    monkeypatch.setattr(type(q), "_check", lambda self, answer: 1 / 0)
    r = q.judge(768)
    assert r.status == "incorrect" and "could not judge" in r.message and "ZeroDivisionError" in r.message


def test_record_checks_with_diverts_check_until_turned_off(capsys):
    q = exercises.question("00.q1")
    seen = []
    problem.record_checks_with(lambda question, answer: seen.append((question.id, answer)) or "recorded")
    try:
        assert q.check("anything") == "recorded"
    finally:
        problem.record_checks_with(None)
    assert seen == [("00.q1", "anything")] and capsys.readouterr().out == ""
    assert q.check("anything").status == "incorrect"                   # judged again


def test_watched_names_the_reference_and_the_forbidden_functions():
    function_q, value_q = exercises.question("03.q2"), exercises.question("00.q3")
    watched = function_q.watched()
    assert function_q.reference in watched and len(watched) > 1        # 03.q2 forbids tutor's unfold attention
    assert value_q.watched() == []
    assert "course's own" in function_q.check(function_q.reference).message


@pytest.mark.parametrize("qid", ["00.q1", "00.q3"])
def test_withhold_replaces_solution_and_value_for_every_instance(qid):
    q = exercises.question(qid)
    copy = type(f"Copy{type(q).__name__}", (type(q),), {})             # withhold acts on the class
    a, b = copy(), copy()
    a.withhold("(withheld)")
    assert b.solution_code == "(withheld)" and q.solution_code != "(withheld)"
    if isinstance(q, exercises.ValueProblem):
        assert b.reference == "(withheld)" and q.reference != "(withheld)"
    else:
        assert b.reference is q.reference


def test_the_notebook_text_of_a_question():
    for q in exercises.questions():
        assert q.answer_name.isidentifier() and q.prompt.strip() and q.stub.strip() and q.solution_code.strip()
        assert q.answer_name in q.stub and q.answer_name in q.solution_code


def test_a_remote_call_keeps_its_own_time_limit():
    calls = []

    class Elsewhere(sandbox.RemoteCall):
        def call_limited(self, args, seconds, probe=None):
            calls.append((args, seconds, probe))
            return 42, None

    def probe(fn, args):                                               # never runs here for a RemoteCall
        raise AssertionError("probed in this process")
    answer = Elsewhere()
    assert sandbox.call_with_limit(answer, (1, 2), 3.0) == (42, None)
    assert sandbox.probe_with_limit(probe, answer, (torch.zeros(2),), 4.0) == (42, None)
    assert [(len(a), s, p) for a, s, p in calls] == [(2, 3.0, None), (1, 4.0, "probe")]
    with pytest.raises(NotImplementedError):
        sandbox.RemoteCall().call_limited((), 1.0)


def test_code_of_sees_through_wrappers():
    import functools

    def f():
        pass

    @functools.wraps(f)
    def wrapper():
        return f()
    assert sandbox.code_of(wrapper) is sandbox.code_of(f) is f.__code__ and sandbox.code_of(3) is None
