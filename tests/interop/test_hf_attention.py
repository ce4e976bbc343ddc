"""attn_implementation="tutor" inside tiny random transformers decoders (the `peers` extra; nothing is
downloaded): Mistral (every layer sliding), Gemma 3 (sliding and full layers, 2 : 1 here) and gpt-oss
(alternating, with learned sink logits) generate the same greedy tokens as attn_implementation="eager"
with logits within 1e-4 in float32, many windows deep, with a left-padded batch; the prefill reads a
band of keys (never T x T) and a decoded token reads the w keys of a sliding layer; what cannot be
honoured is refused by name."""
from __future__ import annotations

import inspect

import pytest
import torch

import tutor.interop.hf_attention as hf_attention
from strategies import single_thread  # noqa: F401 (fixture)
from tutor.interop import HF_ATTENTION_NAME, HFMaskSpec, QUERY_CHUNK, hf_attention_forward, register_hf_attention

transformers = pytest.importorskip("transformers")
from transformers import (DynamicCache, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, GptOssConfig,   # noqa: E402
                          GptOssForCausalLM, MistralConfig, MistralForCausalLM)
from transformers.masking_utils import causal_mask_function                  # noqa: E402
from transformers.utils import logging as hf_logging                        # noqa: E402

hf_logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("single_thread")

WINDOW = 6                                                                  # HF sliding_window: w = 5
SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, sliding_window=WINDOW, max_position_embeddings=1024, pad_token_id=0)


def mistral(**kw):
    return MistralForCausalLM, MistralConfig(**{**SMALL, "num_hidden_layers": 2, **kw})


def gemma3(**kw):
    layers = ["sliding_attention", "sliding_attention", "full_attention"]
    return Gemma3ForCausalLM, Gemma3TextConfig(**{**SMALL, "num_hidden_layers": 3, "layer_types": layers,
                                                  "query_pre_attn_scalar": 8, **kw})


def gpt_oss(**kw):
    layers = ["sliding_attention", "full_attention"]
    return GptOssForCausalLM, GptOssConfig(**{**SMALL, "num_hidden_layers": 2, "layer_types": layers,
                                              "intermediate_size": 32, "num_local_experts": 4,
                                              "num_experts_per_tok": 2, **kw})


def gemma2(**kw):
    return Gemma2ForCausalLM, Gemma2Config(**{**SMALL, "num_hidden_layers": 2, "query_pre_attn_scalar": 8, **kw})


MODELS = {"mistral": mistral, "gemma3": gemma3, "gpt_oss": gpt_oss, "gemma2": gemma2}   # Gemma 2: soft-capped logits


def pair(kind, **kw):
    """(eager model, our model) with the same random weights; gpt-oss's sink logits made non-zero."""
    cls, config = MODELS[kind](**kw)
    torch.manual_seed(0)
    eager = cls._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for module in eager.modules():
            if hasattr(module, "sinks") and isinstance(module.sinks, torch.Tensor):
                module.sinks.normal_(0.0, 2.0)                              # (H,) learned sink logits
    ours = cls._from_config(config, attn_implementation=register_hf_attention()).eval()
    ours.load_state_dict(eager.state_dict())
    return eager, ours


def prompts(B=2, P=10, pad=(0, 4), seed=0):
    """(B, P) ids and the 2-D attention mask; sequence b is left-padded with pad[b] zeros."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (B, P), generator=g)
    mask = torch.ones(B, P, dtype=torch.long)
    for b, n in enumerate(pad[:B]):
        ids[b, :n], mask[b, :n] = 0, 0
    return ids, mask


def with_cache(model, cache):
    """The cache keyword of ``model.forward``: ``cache`` (transformers >= 5.25) or ``past_key_values``."""
    return {"cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values": cache}


def greedy(model, ids, mask, new):
    out = model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=0)
    return out.sequences, torch.stack(out.logits, dim=1)                    # (B, P + new), (B, new, V)


def test_register_returns_the_stable_name():
    assert register_hf_attention() == HF_ATTENTION_NAME == "tutor"
    assert register_hf_attention() == "tutor"                               # idempotent
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    assert "tutor" in AttentionInterface._global_mapping and "tutor" in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_greedy_generation_equals_eager_many_windows_deep_left_padded(kind):
    eager, ours = pair(kind)
    ids, mask = prompts()
    new = 8 * WINDOW                                                         # 8 windows past the prompt
    seq_e, logits_e = greedy(eager, ids, mask, new)
    seq_o, logits_o = greedy(ours, ids, mask, new)
    for b in range(ids.shape[0]):
        differ = (seq_e[b] != seq_o[b]).nonzero()
        if differ.numel():                                                  # allowed only at a near-tie
            step = int(differ[0]) - ids.shape[1]
            top2 = logits_e[b, step].topk(2).values
            assert float(top2[0] - top2[1]) < 1e-4, f"{kind}: sequence {b} differs at step {step}"
            logits_e, logits_o = logits_e[:, :step], logits_o[:, :step]
    torch.testing.assert_close(logits_o, logits_e, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_forward_and_chunked_prefill_equal_eager_on_real_tokens(kind):
    eager, ours = pair(kind)
    ids, mask = prompts(B=2, P=40, pad=(0, 7), seed=1)
    with torch.no_grad():
        want = eager(ids, attention_mask=mask).logits                        # (B, P, V)
        got = ours(ids, attention_mask=mask).logits
        cache = DynamicCache(config=ours.config)                            # prefill in chunks of 13, 13, 14
        parts = []
        for lo, hi in ((0, 13), (13, 26), (26, 40)):
            parts.append(ours(ids[:, lo:hi], attention_mask=mask[:, :hi], use_cache=True,
                              **with_cache(ours, cache)).logits)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cat(parts, dim=1)[real], want[real], atol=1e-4, rtol=0)


def test_soft_capping_is_applied_as_gemma2_does():
    eager, ours = pair("gemma2", attn_logit_softcapping=0.02)           # small: the cap really bites
    ids, mask = prompts(P=20, seed=5)
    with torch.no_grad():
        want, got = eager(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
        uncapped = pair("gemma2", attn_logit_softcapping=None)[1](ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)
    assert (uncapped[real] - want[real]).abs().max() > 1e-3


def test_gemma3_bidirectional_and_a_static_cache():
    eager, ours = pair("gemma3", use_bidirectional_attention=True)       # an or_mask overlay in the predicate
    ids, mask = prompts(P=20, pad=(0, 0), seed=6)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits, eager(ids, attention_mask=mask).logits,
                                   atol=1e-4, rtol=0)
    eager, ours = pair("mistral")
    ids, mask = prompts(P=10, seed=7)
    run = dict(attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0, output_logits=True,
               return_dict_in_generate=True, cache_implementation="static")
    want, got = eager.generate(ids, **run), ours.generate(ids, **run)
    torch.testing.assert_close(torch.stack(got.logits), torch.stack(want.logits), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["mistral", "gpt_oss"])
def test_packed_sequences_as_eager_reads_them(kind):
    eager, ours = pair(kind)
    ids = torch.randint(1, 64, (1, 17), generator=torch.Generator().manual_seed(8))
    position_ids = torch.cat([torch.arange(9), torch.arange(8)])[None]       # two sequences in one row
    with torch.no_grad():
        want = eager(ids, position_ids=position_ids, use_cache=False).logits
        got = ours(ids, position_ids=position_ids, use_cache=False).logits
        alone = eager(ids[:, 9:], use_cache=False).logits                # the second sequence by itself
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    if kind == "mistral":                       # gpt-oss hands its masks no position_ids: it reads across, as eager
        torch.testing.assert_close(got[:, 9:], alone, atol=1e-4, rtol=0)


def record_lengths(monkeypatch):
    """A list that gets ``(queries, keys)`` of every ``masked_attention`` call the registered attention makes."""
    seen = []
    original = hf_attention.masked_attention

    def spy(q, k, v, allowed, **kw):
        seen.append((q.shape[2], k.shape[2]))
        return original(q, k, v, allowed, **kw)
    monkeypatch.setattr(hf_attention, "masked_attention", spy)
    return seen


def test_prefill_reads_a_band_and_a_decoded_token_reads_the_window(monkeypatch):
    seen = record_lengths(monkeypatch)
    _, ours = pair("mistral")                                              # every layer sliding
    T = 3 * QUERY_CHUNK + 17
    ids = torch.randint(1, 64, (1, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    prefill = [n for c, n in seen if c > 1]
    decode = [n for c, n in seen if c == 1]
    assert prefill and max(prefill) <= QUERY_CHUNK + WINDOW - 1 < T            # no T x T scores
    assert decode and max(decode) <= WINDOW                                 # O(w) per decoded token


def test_full_layers_read_the_whole_prefix_sliding_layers_only_the_window(monkeypatch):
    seen = record_lengths(monkeypatch)
    _, ours = pair("gpt_oss")                                              # sliding, full
    ids = torch.randint(1, 64, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    decode = [n for c, n in seen if c == 1]                                 # layer 0, layer 1, layer 0, ...
    assert decode[0::2] == [WINDOW] * 3 and decode[1::2] == [31, 32, 33]


def test_what_cannot_be_honoured_is_refused_by_name():
    ids, mask = prompts()
    _, ours = pair("mistral", attention_dropout=0.1)
    with pytest.raises(ValueError, match="dropout=0.1 in training mode"):
        ours.train()(ids, attention_mask=mask)
    ours.eval()(ids, attention_mask=mask)                                   # dropout is off in eval
    with pytest.raises(ValueError, match="output_attentions=True"):
        ours(ids, attention_mask=mask, output_attentions=True)
    q, kv = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="attention_mask of type Tensor"):
        hf_attention_forward(ours.model.layers[0].self_attn, q, kv, kv, torch.zeros(1, 1, 5, 5))
    causal = HFMaskSpec(causal_mask_function, 1, 5, 5, 0, 0)
    with pytest.raises(ValueError, match=r"a mask for \(T, N\) = \(5, 5\)"):
        hf_attention_forward(ours.model.layers[0].self_attn, q, torch.randn(1, 2, 7, 8),
                             torch.randn(1, 2, 7, 8), causal)


def test_without_a_mask_it_is_causal_over_the_last_keys():
    _, ours = pair("mistral")
    module = ours.model.layers[0].self_attn
    g = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(1, 4, 3, 8, generator=g), torch.randn(1, 2, 7, 8, generator=g), torch.randn(1, 2, 7, 8, generator=g)
    out, weights = hf_attention_forward(module, q, k, v, None, scaling=0.5)
    kr, vr = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)    # (1, 4, 7, 8)
    allowed = torch.arange(7)[None, :] <= torch.arange(4, 7)[:, None]       # query t sits at key 4 + t
    want = torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=allowed, scale=0.5)
    assert weights is None
    torch.testing.assert_close(out, want.transpose(1, 2), atol=1e-6, rtol=0)
