"""python -m zoo.bench {ops,speed,recall,text,hpm,gpu} ...  (each command's --help says more)."""
import argparse
import importlib
import shlex
import sys

from zoo.openmp import shorten_openmp_busy_wait

shorten_openmp_busy_wait()  # before anything imports torch

from zoo.bench.environment import set_command

# command -> module with add_arguments(parser) and run(args)
COMMANDS = {
    "ops": ("zoo.bench.ops", "time each kernel against its reference and its peers (fwd, fwd+bwd, GB/s, HBM floor)"),
    "speed": ("zoo.bench.speed", "LM training / prefill / decode tokens per second and peak memory against length"),
    "recall": ("zoo.bench.recall", "MQAR recall against state size, one line per mixer"),
    "text": ("zoo.bench.text_compare", "mixers on text at one token budget (experiment=text_compare), one table"),
    "hpm": ("zoo.bench.hpm_compare", "anchor vs anchor + hierarchical memory vs dense, accuracy per fact frequency"),
    "gpu": ("zoo.bench.gpu", "the GPU check, one phase per call (proof first; then peers, ops, mixers, recall, ...), packed into one archive"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a command whose module is not written yet is simply not offered
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    set_command(shlex.join(["python", "-m", "zoo.bench", *argv]))
    if args.command is None:
        parser.print_help()
        return 2
    return modules[args.command].run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
