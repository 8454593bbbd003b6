"""python -m zoo.bench hpm: the run grid (models x lrs x seeds), the lr chosen on validation, mean ± sd per bucket,
the size ratios of the table, and one-line errors for bad arguments. No training: results are made up."""
import argparse

import pytest

pytest.importorskip("sklearn")

from zoo.bench import hpm_compare
from zoo.bench.train_runs import compose_config


def parse(*argv):
    parser = argparse.ArgumentParser()
    hpm_compare.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_grid_is_every_model_lr_and_seed_and_only_the_no_generic_model_drops_the_generic_memory(tmp_path):
    base = compose_config(["experiment=hpm_paper_ratios"])
    specs, runs = hpm_compare.build_specs(base, [1e-3, 3e-3], 3, tmp_path)
    assert len(specs) == len(set(s.key for s in specs)) == 4 * 2 * 3
    for spec in specs:
        name, lr, seed = runs[spec.key]
        config = spec.config["train"]
        assert config["optim"]["lr"] == lr and config["seed"] == seed and config["task"]["seed"] == seed
        assert config["task"]["generic_probability"] == (0.0 if name == "memory-no-generic" else pytest.approx(1 / 17))
        assert (config["model"]["mlp"]["name"] == "hpm") == name.startswith("memory")


def test_the_paper_ratios_preset_has_a_bank_over_20x_and_fetches_about_10_percent_of_the_anchor():
    from zoo.model import LM

    base = compose_config(["experiment=hpm_paper_ratios"])
    model = dict(base.model)
    sizes = LM(186, **{k: v for k, v in model.items()}).size_report()  # vocabulary 186: task=facts' default
    assert sizes["bank"] / sizes["anchor"] >= 20
    assert 0.08 <= sizes["fetched"] / sizes["anchor"] <= 0.12


def result(validation: float, accuracies: list[float], memory: bool) -> dict:
    sizes = {"parameters": 1100, "bank": 1000, "fetched": 10, "anchor": 100, "active": 110} if memory else \
        {"parameters": 100}
    slices = [{"slice": f"b{i}", "num_probes": 5, "path_at_home": 0.5, "accuracy": a} for i, a in enumerate(accuracies)]
    return {"validation": {"best": validation}, "slices": slices, "sizes": sizes}


def made_up_runs() -> list[dict]:
    runs = []
    for seed in (0, 1):
        for lr, validation in ((1e-3, 0.2), (3e-3, 0.3)):
            for name in hpm_compare.VARIANTS:
                # the memory is best at 1e-3 on validation; its test accuracy there differs by seed
                good = validation + (0.2 if name == "memory" and lr == 1e-3 else 0)
                accuracies = [0.1 * (seed + 1), 0.5] if lr == 3e-3 or name == "memory" else [0.0, 0.0]
                runs.append({"model": name, "lr": lr, "seed": seed,
                             "result": result(good, accuracies, name.startswith("memory"))})
    return runs


def test_each_models_lr_is_chosen_on_validation_and_cells_are_mean_and_sd_over_seeds(tmp_path):
    runs = made_up_runs()
    chosen = hpm_compare.choose_lrs(runs)
    assert chosen["memory"]["lr"] == 1e-3 and chosen["anchor"]["lr"] == 3e-3
    rows = hpm_compare.table_rows(runs, chosen)
    assert [r["bucket"] for r in rows] == ["b0", "b1", "mean"]
    assert rows[0]["memory"] == "0.150 ± 0.071" and rows[1]["anchor"] == "0.500 ± 0.000"
    assert rows[0]["memory-anchor"] == "0.000 ± 0.000"  # differences are paired by seed
    sizes = {r["model"]: r for r in hpm_compare.size_rows(runs, chosen)}
    assert sizes["memory"]["bank/anchor"] == 10 and sizes["memory"]["fetched/anchor"] == 0.1
    assert sizes["anchor"]["bank"] == 0 and sizes["memory"]["lr (chosen on validation)"] == 1e-3
    hpm_compare.write_report(runs, tmp_path, chance=0.1)
    text = (tmp_path / "hpm_compare.md").read_text()
    assert "| bucket | probes | path_at_home | anchor | memory |" in text and "| memory | 1100 | 100 | 1000 |" in text
    assert (tmp_path / "hpm_compare.png").stat().st_size > 0 and (tmp_path / "hpm_compare.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "error: --seeds must be a positive integer, got 0"),
    (["--lrs", "0.001", "-1"], "error: --lrs must be positive numbers, got [0.001, -1.0]"),
    (["+model.memory_layers=[1]"], "model.memory_layers must stay unset here, got [1]"),
    (["model.mlp=swiglu"], "compares model.mlp=hpm with its anchor"),
])
def test_bad_arguments_stop_with_one_line(tmp_path, argv, message):
    with pytest.raises(SystemExit) as stop:
        hpm_compare.run(parse("--out", str(tmp_path), *argv))
    assert message in str(stop.value) and "\n" not in str(stop.value)
    assert not (tmp_path / "runs").exists()
