"""python -m zoo.bench speed: outputs and their fields, attention as the reference, OOM recorded, bad names."""
import json

import pytest
import torch

from zoo.bench.__main__ import main
from zoo.bench.speed import TEST, build_lm, measure_point


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    assert main(["speed", "--preset", "test", "--mixers", "short_conv", "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_writes_json_and_png_with_attention_as_the_reference(measured):
    payload = json.loads((measured / "speed.json").read_text())
    assert payload["environment"]["command"] and payload["environment"]["device"] == "cpu"
    rows = payload["rows"]
    # attention is added although only short_conv was asked for
    expected = {(m, b, L) for m in ("attention", "short_conv") for b in TEST.batch_sizes for L in TEST.seq_lens}
    assert {(r["mixer"], r["batch"], r["seq_len"]) for r in rows} == expected
    for row in rows:
        for name in ("train", "prefill", "decode"):
            assert row[f"{name}_tok_s"] > 0
        assert row["train_peak_bytes"] is None  # torch tracks no peak on CPU
        assert row["oom"] is None and row["state_size"] > 0 and row["params"] > 0
    for row in rows:
        ref = next(r for r in rows if r["mixer"] == "attention" and (r["batch"], r["seq_len"]) ==
                   (row["batch"], row["seq_len"]))
        for name in ("train", "prefill", "decode"):
            assert row[f"{name}_vs_attention"] == pytest.approx(row[f"{name}_tok_s"] / ref[f"{name}_tok_s"])
    # attention's state grows with length, short_conv's does not
    state = {(r["mixer"], r["seq_len"]): r["state_size"] for r in rows}
    assert state["attention", 16] == 2 * state["attention", 8]
    assert state["short_conv", 16] == state["short_conv", 8]
    table = (measured / "speed.md").read_text().splitlines()
    assert table[0] == "`python -m zoo.bench speed --preset test --mixers short_conv --out " + str(measured) + " --device cpu`"
    assert table[4].startswith("| mixer | batch | seq_len | train_tok_s |") and len(table) == 6 + len(rows)
    png = (measured / "speed.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_out_of_memory_is_recorded_not_raised():
    model = build_lm(TEST, "attention", torch.device("cpu"), torch.float32)
    forward = model.forward

    def forward_out_of_memory_when_training(*args, **kwargs):
        if torch.is_grad_enabled():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return forward(*args, **kwargs)

    model.forward = forward_out_of_memory_when_training
    row = measure_point(model, TEST, batch=2, seq_len=8, device=torch.device("cpu"))
    assert row["train_oom"] and row["train_tok_s"] is None and row["oom"] == "train"
    assert row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0


def test_other_errors_are_not_swallowed():
    model = build_lm(TEST, "attention", torch.device("cpu"), torch.float32)
    model.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        measure_point(model, TEST, batch=2, seq_len=8, device=torch.device("cpu"))


def test_unknown_mixer_and_preset_fail_listing_the_known(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown mixer.*'nope'.*registered mixers: .*attention"):
        main(["speed", "--preset", "test", "--mixers", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"unknown speed preset 'huge'.*known presets: cpu, gpu, generation"):
        main(["speed", "--preset", "huge", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_generation_presets_skip_the_training_step():
    import dataclasses
    preset = dataclasses.replace(TEST, train=False)
    model = build_lm(preset, "attention", torch.device("cpu"), torch.float32)
    row = measure_point(model, preset, batch=2, seq_len=8, device=torch.device("cpu"))
    assert "train_tok_s" not in row
    assert row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0


def test_cpu_preset_times_each_length_at_the_training_tokens_per_step():
    """The configs' CPU training batch is 64 x 64 = 4096 tokens; longer lengths keep the tokens per step."""
    from zoo.bench.speed import CPU
    assert CPU.points() == [(64, 64), (16, 256), (4, 1024)]
    assert TEST.points() == [(2, 8), (2, 16)]
    # decode at one batch at every length, so decode speed reads against context alone
    assert {CPU.decode_batch_at(batch) for batch, _ in CPU.points()} == {4}
    assert TEST.decode_batch_at(2) == 2


def test_co4_preset_times_both_paths_against_attention(tmp_path):
    """The Co4 comparison runs on CPU at its tiny size: attention and each Co4 variant at every point."""
    from zoo.bench.speed import CO4, CO4_TEST
    assert set(CO4.variants) == {"co4_triton", "co4_pytorch"}
    assert main(["speed", "--preset", "co4-test", "--out", str(tmp_path), "--device", "cpu"]) == 0
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    expected = {(m, b, L) for m in ("attention", *CO4_TEST.variants) for b in CO4_TEST.batch_sizes
                for L in CO4_TEST.seq_lens}
    assert {(r["mixer"], r["batch"], r["seq_len"]) for r in rows} == expected
    for row in rows:
        assert row["train_tok_s"] > 0 and row["prefill_tok_s"] > 0 and row["decode_tok_s"] > 0
        assert row["train_vs_attention"] > 0
    with pytest.raises(SystemExit, match="co4_triton.*--mixers 'mamba'"):
        main(["speed", "--preset", "co4", "--mixers", "mamba", "--device", "cpu"])
