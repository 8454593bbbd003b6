"""Sampling: greedy decoding through every mixer's cache equals re-running the full forward each step;
top-k / top-p restrict the sampled tokens; zoo.sample completes a prompt from a text-task checkpoint."""
import pytest
import torch

from tests.blocks.mixer_cases import case_id, mixer_cases
from zoo.model import LM, _sample
from zoo.sample import complete
from zoo.tasks.tokenizers import ByteTokenizer

VOCAB = 61


@pytest.mark.parametrize("case", mixer_cases(), ids=case_id)
def test_greedy_sampling_through_the_cache_equals_full_forward_decoding(case):
    """For every registered mixer (and its extra cases, e.g. attention with a window shorter than the run)."""
    name, hyper = case
    torch.manual_seed(0)
    model = LM(VOCAB, d_model=32, n_layers=2, layers=[{"name": name, **hyper}]).eval()
    with torch.no_grad():  # away from the initialisation, whose tied head tends to repeat one token
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    prompt = torch.randint(0, VOCAB, (4, 7), generator=torch.Generator().manual_seed(1))
    cached = model.generate(prompt, max_new_tokens=12)
    sequence = prompt
    with torch.no_grad():
        for _ in range(12):  # no cache: the whole sequence again every step
            sequence = torch.cat([sequence, model(sequence)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(cached, sequence)
    assert len(set(cached[:, 7:].flatten().tolist())) > 2, "a constant continuation would prove little"


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.07, 0.03]])).expand(4000, -1)
    generator = torch.Generator().manual_seed(0)
    drawn = lambda **kw: set(_sample(logits, 1.0, generator=generator, **{"top_k": None, "top_p": None, **kw})
                             .flatten().tolist())
    assert drawn(top_k=2) == {0, 1}
    assert drawn(top_p=0.7) == {0, 1}          # 0.5 < 0.7, 0.5 + 0.25 reaches it: two tokens
    assert drawn(top_p=0.75) == {0, 1}
    assert drawn(top_p=0.76) == {0, 1, 2}
    assert drawn(top_p=0.1) == {0}             # the most likely token always stays
    assert drawn(top_p=1.0) == {0, 1, 2, 3, 4}
    assert drawn(top_k=3, top_p=0.99) == {0, 1, 2}


@pytest.mark.parametrize("bad,match", [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"),
                                       ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p")])
def test_bad_sampling_arguments_fail_naming_themselves(bad, match):
    model = LM(VOCAB, d_model=16, n_layers=1, layers=["short_conv"])
    with pytest.raises(ValueError, match=match):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, **{"temperature": 1.0, **bad})


def test_complete_reads_the_prompt_as_a_document_start_and_stops_at_end_of_text():
    tokenizer = ByteTokenizer()

    class Scripted(torch.nn.Module):
        """Writes 'ok' then end of text, whatever the prompt; records what it was given."""
        vocab_size = 257

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.prompts = []

        def generate(self, input_ids, max_new_tokens, **kw):
            self.prompts.append(input_ids[0].tolist())
            tail = torch.tensor([[ord("o"), ord("k"), 256, ord("x")]])[:, :max_new_tokens]
            return torch.cat([input_ids, tail], dim=1)

    model = Scripted()
    assert complete(model, tokenizer, "héllo", max_new_tokens=4) == "ok"
    assert model.prompts[0] == [256, *"héllo".encode()]


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_zoo_sample_needs_only_the_checkpoint_path(tmp_path, capsys, tokenizer):
    """train.py task=text writes a checkpoint; zoo.sample rebuilds model and tokeniser from it alone."""
    from hydra import compose, initialize_config_dir

    from tests.tasks.test_text import ROOT, write_documents
    from zoo.sample import main
    from zoo.train import train

    if tokenizer == "bpe":
        pytest.importorskip("tokenizers")
    write_documents(tmp_path / "corpus", 25)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "task=text", f"task.path={tmp_path / 'corpus'}", f"task.tokenizer={tokenizer}", "task.bpe_vocab_size=300",
            "task.seq_len=32", "model.d_model=32", "trainer.max_epochs=1", "+trainer.limit_train_batches=30",
            "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "print_test_table=false"])
    train(cfg, tmp_path / "run")
    capsys.readouterr()
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    text = main(["--checkpoint", str(checkpoint), "--prompt", "doc0003 line", "--max-new-tokens", "40",
                 "--temperature", "0"])
    printed = capsys.readouterr().out
    assert printed == "doc0003 line" + text + "\n" and text
    again = main(["--checkpoint", str(checkpoint), "--prompt", "doc0003 line", "--max-new-tokens", "40",
                  "--temperature", "0"])
    assert again == text                                                     # greedy is deterministic
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path / "nothing.ckpt"), "--prompt", "x"])
    assert exit_info.value.code == 2 and "nothing.ckpt" in capsys.readouterr().err
