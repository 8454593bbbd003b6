"""Sample text from a checkpoint trained on the text task.

python -m zoo.sample --checkpoint PATH --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
                     [--top-p P] [--seed S]

The tokeniser is rebuilt from the checkpoint's saved task config (bytes need nothing; BPE is found in its
cache), the prompt is prefilled through every layer's cache, and new tokens are decoded one at a time.
Generation stops early at an end-of-text token. Prints the prompt followed by the generated text.
"""
import argparse
import sys

import torch

from zoo.model import LM, check_sampling


def complete(model: LM, tokenizer, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> str:
    """The text the model writes after prompt (without the prompt). The prompt is read as the start of a
    document: it follows an end-of-text token, as every document did in training."""
    ids = [tokenizer.eos_id, *tokenizer.encode(prompt).tolist()]
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    output = model.generate(torch.tensor([ids], device=device), max_new_tokens, temperature=temperature,
                            top_k=top_k, top_p=top_p, generator=generator)[0, len(ids):].tolist()
    if tokenizer.eos_id in output:  # the model ended the document
        output = output[:output.index(tokenizer.eos_id)]
    return tokenizer.decode(output)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m zoo.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by python train.py task=text")
    parser.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling: keep tokens up to this mass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    try:
        from zoo.checkpoints import load_model
        from zoo.tasks.text import tokenizer_from_task_config

        if args.max_new_tokens <= 0:
            raise ValueError(f"--max-new-tokens must be a positive integer, got {args.max_new_tokens}")
        check_sampling(args.temperature, args.top_k, args.top_p)
        model, config = load_model(args.checkpoint, map_location=args.device)
        task = config.get("task", {})
        if task.get("name") != "text":
            raise ValueError(f"checkpoint {args.checkpoint} was trained on task {task.get('name')!r}; "
                             "zoo.sample needs a checkpoint of task=text")
        tokenizer = tokenizer_from_task_config(task)
        if tokenizer.vocab_size != model.vocab_size:
            raise ValueError(f"the tokenizer rebuilt for {args.checkpoint} has {tokenizer.vocab_size} tokens but "
                             f"the model {model.vocab_size}; give task.tokenizer_file of the run")
        text = complete(model.eval(), tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                        args.top_p, args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(args.prompt + text)
    return text


if __name__ == "__main__":
    main()
