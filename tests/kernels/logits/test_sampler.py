"""The whole sampler: every row gets what the float64 reference says and exactly what it would get alone
(distributions and independence of draws: test_sampler_statistics.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hearth.kernels import Sampler
from tests.kernels import reference
from tests.kernels.batches import MIXED_ROWS, VOCAB_SIZE, at_position, draws, sample, tied_logits, zipf_logits
from tests.kernels.rows import RowParams, build_metadata, to_device


@pytest.mark.parametrize("processed", [False, True])
def test_every_row_gets_exactly_what_it_gets_alone(processed):
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=0)
    for step in range(3):
        rows = at_position(MIXED_ROWS, step)
        batch = sample(logits, rows, processed)
        for i, row in enumerate(rows):
            alone = sample(logits[i:i + 1], [row], processed)
            assert batch.token_ids[i] == alone.token_ids[0], (i, row)
            if row.num_top_logprobs is None:
                continue
            num = row.num_top_logprobs
            assert batch.logprobs[i] == alone.logprobs[0]
            assert torch.equal(batch.top_token_ids[i, :num], alone.top_token_ids[0])
            assert torch.equal(batch.top_logprobs[i, :num], alone.top_logprobs[0])


def test_rows_with_tied_logits_get_exactly_what_they_get_alone():
    logits = tied_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=0)
    assert (logits[:, :].float().topk(5, dim=1).values.diff(dim=1) == 0).any()  # the premise: ties at the top
    for processed in (False, True):
        for step in range(5):
            rows = at_position(MIXED_ROWS, step)
            batch = sample(logits, rows, processed)
            for i, row in enumerate(rows):
                alone = sample(logits[i:i + 1], [row], processed)
                assert batch.token_ids[i] == alone.token_ids[0]
                if row.num_top_logprobs:
                    assert torch.equal(batch.top_token_ids[i, :row.num_top_logprobs], alone.top_token_ids[0])


def test_processed_alternatives_are_exactly_the_kept_tokens_even_among_ties():
    logits = tied_logits(8, VOCAB_SIZE, seed=1)
    for top_k in (1, 2, 3, 5, 8):
        rows = [RowParams(top_k=top_k, seed=s, num_top_logprobs=10) for s in range(8)]
        out = sample(logits, rows, processed=True)
        for i in range(8):
            is_kept = out.top_logprobs[i] > -math.inf
            assert is_kept.tolist() == [True] * top_k + [False] * (10 - top_k)
            kept = out.top_token_ids[i, :top_k].tolist()
            assert out.token_ids[i].item() in kept
            position = kept.index(out.token_ids[i].item())
            assert out.top_logprobs[i, position] == out.logprobs[i]
            # The kept alternatives are a most-likely set (ties may pick either id) and renormalised.
            expected = torch.sort(logits[i].float(), descending=True).values[:top_k]
            assert torch.equal(logits[i, kept].float(), expected)
            assert out.top_logprobs[i, :top_k].double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_processing_equals_the_stages_run_one_by_one():
    """Stages 2-4 give every logit the exact float32 value of the documented order: bias, bans, bitmask,
    repetition, frequency/presence."""
    from hearth.kernels.logits.logit_bias import apply_logit_bias
    from hearth.kernels.logits.penalties import apply_frequency_presence_penalties, apply_repetition_penalty
    from hearth.kernels.logits.token_mask import apply_banned_tokens, apply_token_bitmask, unpack_bitmask

    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=12)
    for every in (False, True):
        md = build_metadata(MIXED_ROWS, VOCAB_SIZE, include_every_stage=every)
        expected = logits.clone()
        expected = apply_logit_bias(expected, md.bias_token_ids, md.bias_values)
        expected = apply_banned_tokens(expected, md.banned_token_ids, md.is_banned)
        expected = apply_token_bitmask(expected, md.allowed_token_bitmask)
        expected = apply_repetition_penalty(expected, md.seen_token_ids, md.repetition_penalty)
        expected = apply_frequency_presence_penalties(
            expected, md.output_token_ids, md.output_token_counts, md.frequency_penalty, md.presence_penalty
        )
        result = Sampler._process(logits.clone(), md)
        assert torch.equal(result, expected)
        # Every id changed other than by the bitmask (which never changes a choosable token) is reported.
        touched = Sampler._touched_ids(md)
        is_masked = ~unpack_bitmask(md.allowed_token_bitmask, VOCAB_SIZE)
        for row, token in ((result != logits) & ~is_masked).nonzero().tolist():
            assert token in touched[row].tolist()


def test_sparse_stages_report_every_id_they_change():
    rows = [r for r in MIXED_ROWS if r.allowed_token_ids is None]
    logits = zipf_logits(len(rows), VOCAB_SIZE, seed=13)
    md = build_metadata(rows, VOCAB_SIZE)
    assert md.allowed_token_bitmask is None and md.bias_token_ids is not None
    result = Sampler._process(logits.clone(), md)
    touched = Sampler._touched_ids(md)
    changed = (result != logits).nonzero().tolist()
    assert changed
    for row, token in changed:
        assert token in touched[row].tolist()


def test_raw_logprob_of_a_token_forced_by_bias_is_its_raw_value():
    logits = zipf_logits(2, VOCAB_SIZE, seed=14)
    weakest = logits.argmin(1).tolist()
    rows = [RowParams(temperature=t, seed=1, logit_bias={weakest[i]: 100.0}, num_top_logprobs=3)
            for i, t in enumerate((0.0, 1.0))]
    out = sample(logits, rows)
    assert out.token_ids.tolist() == weakest
    for i in range(2):
        expected = torch.log_softmax(logits[i].double(), dim=0)[weakest[i]].item()
        assert out.logprobs[i].item() == pytest.approx(expected, abs=1e-4)




def test_raw_logprob_of_a_biased_token_stays_raw_beside_a_constrained_row():
    """A bitmask in the batch (another request's constrained decoding) must not let the bias through."""
    logits = zipf_logits(2, VOCAB_SIZE, seed=14)
    weakest = int(logits[0].argmin())
    rows = [RowParams(temperature=0.0, logit_bias={weakest: 100.0}, num_top_logprobs=2),
            RowParams(seed=2, allowed_token_ids=(1, 2, 3), num_top_logprobs=2)]
    out = sample(logits, rows)
    assert out.token_ids[0] == weakest
    expected = torch.log_softmax(logits[0].double(), dim=0)[weakest].item()
    assert out.logprobs[0].item() == pytest.approx(expected, abs=1e-4)
    assert out.logprobs[0] == sample(logits[:1], rows[:1]).logprobs[0]


def test_seeded_rows_keep_their_tokens_when_the_batch_is_reordered_grown_or_shrunk():
    generator = torch.Generator().manual_seed(1)
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=1)
    base = sample(logits, MIXED_ROWS).token_ids
    order = torch.randperm(len(MIXED_ROWS), generator=generator)
    permuted = sample(logits[order], [MIXED_ROWS[i] for i in order.tolist()]).token_ids
    assert torch.equal(permuted, base[order])
    extra = zipf_logits(40, VOCAB_SIZE, seed=2)
    extra_rows = [RowParams(temperature=1.0, top_p=0.8, seed=100 + i) for i in range(40)]
    grown = sample(torch.cat([extra[:20], logits, extra[20:]]), extra_rows[:20] + MIXED_ROWS + extra_rows[20:])
    assert torch.equal(grown.token_ids[20:20 + len(MIXED_ROWS)], base)
    kept = [2, 3, 9]
    shrunk = sample(logits[kept], [MIXED_ROWS[i] for i in kept]).token_ids
    assert torch.equal(shrunk, base[kept])


def test_tokens_lie_in_the_reference_kept_set_and_greedy_is_the_reference_argmax():
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=3)
    for step in range(20):
        rows = at_position(MIXED_ROWS, step)
        out = sample(logits, rows)
        for i, row in enumerate(rows):
            processed = reference.processed_logits(logits[i], row)
            token = out.token_ids[i].item()
            if row.is_greedy:
                assert token == reference.greedy_token(processed)
                continue
            probs = reference.softmax(processed / row.temperature)
            # Loosened by 1e-5 so that float32 rounding exactly at a cut cannot fail the test.
            kept = reference.kept_tokens(probs, row.top_k, min(1.0, row.top_p + 1e-5), row.min_p * (1 - 1e-5))
            assert token in kept, (i, row)


def test_seeded_draws_repeat_and_different_seeds_differ():
    logits = zipf_logits(1, VOCAB_SIZE, seed=4, scale=0.5)
    first = draws(logits[0], RowParams(seed=7), 50)
    again = draws(logits[0], RowParams(seed=7), 50)
    other = draws(logits[0], RowParams(seed=8), 50)
    assert torch.equal(first, again)
    assert (first != other).sum() > 40  # a flat-ish row: two streams rarely agree


@pytest.mark.parametrize("processed", [False, True])
def test_logprobs_are_raw_or_processed_as_asked(processed):
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=5)
    out = sample(logits, MIXED_ROWS, processed)
    for i, row in enumerate(MIXED_ROWS):
        if row.num_top_logprobs is None:
            continue
        if not processed:
            expected = reference.log_softmax(logits[i])  # the unmodified logits, whatever the row's stages
        elif row.is_greedy:
            expected = reference.log_softmax(reference.processed_logits(logits[i], row))  # no temperature
        else:
            expected = reference.distribution(logits[i], row).log()
        token = out.token_ids[i].item()
        assert out.logprobs[i].item() == pytest.approx(expected[token].item(), abs=1e-4)
        num = row.num_top_logprobs
        best = torch.sort(expected, descending=True).values[:num]
        got = out.top_logprobs[i, :num].double()
        is_finite = best > -math.inf
        assert torch.equal(got > -math.inf, is_finite)
        torch.testing.assert_close(got[is_finite], best[is_finite], atol=1e-4, rtol=0)
        torch.testing.assert_close(expected[out.top_token_ids[i, :num]][is_finite], best[is_finite], atol=1e-4,
                                   rtol=0)


def test_processed_logprobs_of_an_all_greedy_batch_follow_bias_and_penalties():
    logits = zipf_logits(2, VOCAB_SIZE, seed=6)
    rows = [RowParams(temperature=0.0, logit_bias={3: 5.0}, presence_penalty=1.0, output_token_ids=(4,),
                      num_top_logprobs=4), RowParams(temperature=0.0, num_top_logprobs=4)]
    out = sample(logits, rows, processed=True)
    for i, row in enumerate(rows):
        expected = reference.log_softmax(reference.processed_logits(logits[i], row))
        assert out.token_ids[i].item() == reference.greedy_token(expected)
        torch.testing.assert_close(out.top_logprobs[i].double(), torch.sort(expected, descending=True).values[:4],
                                   atol=1e-5, rtol=0)


def test_the_callers_logits_are_left_untouched():
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=7)
    copy = logits.clone()
    sample(logits, MIXED_ROWS, processed=True)
    sample(logits, MIXED_ROWS, processed=False)
    assert torch.equal(logits, copy)


def test_owned_float32_logits_from_inference_mode_are_sampled_as_a_copy():
    """A model's float32 logits (computed under inference mode) handed over as the step's own: the sampler
    cannot write them in place outside inference mode, so it samples a copy, with the same result."""
    logits = zipf_logits(len(MIXED_ROWS), VOCAB_SIZE, seed=8)
    with torch.inference_mode():
        owned = logits.clone()
    md = build_metadata(MIXED_ROWS, VOCAB_SIZE, is_logprobs_processed=True)
    out = Sampler()(owned, md, is_logits_owned=True)
    expected = sample(logits, MIXED_ROWS, processed=True)
    assert torch.equal(out.token_ids, expected.token_ids)
    assert torch.equal(owned, logits)


def test_greedy_ties_go_to_the_lowest_id():
    logits = torch.zeros(3, 300)
    logits[0, [250, 17, 130]] = 2.0
    logits[2, [299, 298]] = 1.0
    rows = [RowParams(temperature=0.0)] * 2 + [RowParams(temperature=0.0, logit_bias={5: 1.0})]
    assert sample(logits, rows).token_ids.tolist() == [17, 0, 5]


def test_greedy_rows_beside_rows_that_all_truncate_by_top_k():
    """No row needs its whole distribution (needs_total_mass is False), yet not every row truncates: the
    greedy ones do not. The engine builds such a batch from one greedy and one top_k request."""
    logits = zipf_logits(3, VOCAB_SIZE, seed=3)
    rows = [RowParams(temperature=0.0), RowParams(top_k=20, seed=1), RowParams(top_k=5, min_p=0.1, seed=2)]
    md = build_metadata(rows, VOCAB_SIZE)
    assert not md.needs_total_mass and not md.is_all_truncated
    out = Sampler()(logits, md)
    assert out.token_ids[0] == logits[0].argmax()
    for i in (1, 2):
        assert out.token_ids[i] == sample(logits[i:i + 1], [rows[i]]).token_ids[0]


def test_tiny_temperature_and_tiny_top_p_pick_the_argmax():
    logits = zipf_logits(1, VOCAB_SIZE, seed=8, scale=0.3)  # flat-ish, so a slip would show
    best = int(logits[0].argmax())
    assert (draws(logits[0], RowParams(temperature=1e-4), 300) == best).all()
    assert (draws(logits[0], RowParams(top_p=1e-6), 300) == best).all()
    assert (draws(logits[0], RowParams(top_k=1, temperature=5.0), 300) == best).all()


def test_top_p_one_and_neutral_cuts_draw_as_if_absent():
    logits = zipf_logits(1, VOCAB_SIZE, seed=9)
    rows = [RowParams(seed=5, position=i) for i in range(200)]
    plain = Sampler()(logits.expand(200, -1), build_metadata(rows, VOCAB_SIZE))
    neutral = Sampler()(logits.expand(200, -1), build_metadata(rows, VOCAB_SIZE, include_every_stage=True))
    assert torch.equal(plain.token_ids, neutral.token_ids)


def test_all_minus_inf_but_one_always_draws_that_one():
    logits = torch.full((1, 500), -math.inf)
    logits[0, 321] = -7.0
    for row in (RowParams(temperature=0.0, num_top_logprobs=3), RowParams(top_p=0.5, num_top_logprobs=3),
                RowParams(temperature=3.0, top_k=50, min_p=0.2), RowParams(temperature=1e-4)):
        for processed in (False, True):
            rows = [dataclasses.replace(row, position=i) for i in range(50)]
            out = sample(logits.expand(50, -1), rows, processed)
            assert (out.token_ids == 321).all()
            if row.num_top_logprobs:
                assert (out.logprobs == 0.0).all()
                assert (out.top_logprobs[:, 1:] == -math.inf).all()


@pytest.mark.parametrize("vocab_size", [1, 7, 1000, 32001, 50257])
def test_odd_vocabulary_sizes(vocab_size):
    logits = zipf_logits(len(MIXED_ROWS), vocab_size, seed=vocab_size)
    # Parameters that name ids are folded into the vocabulary.
    rows = [
        dataclasses.replace(
            r,
            logit_bias={t % vocab_size: b for t, b in r.logit_bias.items()},
            prompt_token_ids=tuple(t % vocab_size for t in r.prompt_token_ids),
            output_token_ids=tuple(t % vocab_size for t in r.output_token_ids),
            banned_token_ids=(),
            allowed_token_ids=None if r.allowed_token_ids is None else tuple(range(0, vocab_size, 2)),
            top_k=None if r.top_k is None else min(r.top_k, vocab_size),
        )
        for r in MIXED_ROWS
    ]
    out = sample(logits, rows, processed=True)
    assert ((out.token_ids >= 0) & (out.token_ids < vocab_size)).all()
    for i, row in enumerate(rows):
        if row.is_greedy:
            assert out.token_ids[i].item() == reference.greedy_token(reference.processed_logits(logits[i], row))
        else:
            assert reference.distribution(logits[i], row)[out.token_ids[i]] > 0
    assert out.top_token_ids.shape[1] == min(20, vocab_size)


# --- distributions -------------------------------------------------------------------------------------

# --- CUDA ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("vocab_size", [1000, 128256])
def test_cuda_matches_cpu_for_seeded_and_greedy_rows(vocab_size):
    logits = zipf_logits(len(MIXED_ROWS), vocab_size, seed=11)
    rows = [
        dataclasses.replace(r, allowed_token_ids=None if r.allowed_token_ids is None else tuple(range(0, 1000, 2)))
        for r in MIXED_ROWS
    ]
    for processed in (False, True):
        for step in range(5):
            step_rows = at_position(rows, step)
            md = build_metadata(step_rows, vocab_size, is_logprobs_processed=processed)
            cpu = Sampler()(logits, md)
            cuda = Sampler()(logits.cuda(), to_device(md, "cuda"))
            assert torch.equal(cuda.token_ids.cpu(), cpu.token_ids)
            torch.testing.assert_close(cuda.logprobs.cpu(), cpu.logprobs, atol=1e-4, rtol=0)
            torch.testing.assert_close(cuda.top_logprobs.cpu(), cpu.top_logprobs, atol=1e-4, rtol=0)
