"""asymbp-eval: attack finished runs without retraining them (asymbp.robustness does the attacks).

    asymbp-eval RUN_DIR... attack=pgd [attack.KEY=VALUE ...] [device=cpu] [threads=N]
                [data_root=DIR] [dataset.root=DIR]

Each RUN_DIR is a run directory or a folder searched for them at any depth (a sweep's folder).
Everything is checked before any attack runs: the attack's keys, torchattacks, that every run is
finished with its checkpoint, that its data loads and is images, and, for the transfer attacker,
that its source (attack.transfer_from: by default the backprop run of the same condition and
seed) is finished beside it (same folder). A
diverged run is skipped with a note. Results go into each run directory (robustness/), and
what is there already is not computed again. Exit 2 with one line for bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from asymbp import finetune, plugins, robustness, runs
from asymbp.build import ConfigError, make_model, select_device
from asymbp.config import CONFIG_DIR
from asymbp.data import DatasetError, Splits
from asymbp.report.read import find_run_dirs

#: Keys asymbp-eval takes besides attack and attack.*: where and how the runs are evaluated and
#: where their data is now, never what the run is.
RUN_KEYS = ("device", "threads", "data_root", "dataset.root")
_MISSING = object()
USAGE = (
    "usage: asymbp-eval RUN_DIR... attack=fgsm|pgd|apgd [attack.KEY=VALUE ...] [device=...] "
    "[threads=N] [data_root=DIR] [dataset.root=DIR]"
)
ERRORS = (ConfigError, DatasetError, runs.RunError)  # one line, exit 2


def compose_attack(overrides: Sequence[str]) -> DictConfig:
    """The `attack` node that attack=... and attack.KEY=... overrides compose (Hydra's grammar)."""
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose(config_name="train", overrides=list(overrides))
        else:
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
                cfg = compose(config_name="train", overrides=list(overrides))
    except Exception as error:  # Hydra's composition errors: an unknown attack, a key typo
        raise ConfigError(str(error).splitlines()[0]) from None
    return cfg.attack


def split_arguments(argv: Sequence[str]) -> tuple[list[str], list[str], dict]:
    """(paths, attack overrides, run keys) of the command line; ConfigError for another key."""
    paths, attack, keys = [], [], {}
    for arg in argv:
        if "=" not in arg:
            paths.append(arg)
            continue
        key = arg.split("=", 1)[0].lstrip("+~")
        if key == "attack" and arg.split("=", 1)[1].startswith("_"):
            raise ConfigError(f"{arg} is a part the attacks share, not an attack: choose "
                              f"{', '.join(robustness.ATTACKS)}")  # fmt: skip
        if key == "attack" or key.startswith("attack."):
            attack.append(arg)
        elif key in RUN_KEYS:
            keys.update(OmegaConf.to_container(OmegaConf.from_dotlist([arg])))
        else:
            raise ConfigError(
                f"{arg}: asymbp-eval takes attack=, attack.KEY=, {'=, '.join(RUN_KEYS)}= only "
                "(a run's other keys are what it is: attack another run instead)"
            )
    return paths, attack, keys


def run_config(run_dir: Path, keys: dict) -> DictConfig:
    cfg = OmegaConf.load(run_dir / runs.CONFIG)
    for key, value in OmegaConf.to_container(OmegaConf.create(keys)).items():
        if isinstance(value, dict):  # dataset.root
            for sub, sub_value in value.items():
                OmegaConf.update(cfg, f"{key}.{sub}", sub_value, force_add=True)
        else:
            cfg[key] = value
    return cfg


def source_values(attack: DictConfig) -> dict:
    """The values that turn a run's config into its transfer source's."""
    if attack.transfer_from is None:
        return dict(robustness.DEFAULT_SOURCE)
    return OmegaConf.to_container(attack.transfer_from, resolve=True)


def _source_probe(cfg: DictConfig, attack: DictConfig) -> DictConfig:
    """`cfg` with init_from naming its transfer source (asymbp.finetune finds and trains it)."""
    probe = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    probe.init_from = source_values(attack)
    for key in probe.init_from:
        if key == "init_from" or OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise ConfigError(
                f"attack.transfer_from.{key} is not a key of the config of the runs attacked"
            )
    return probe


def transfer_source(run_dir: Path, cfg: DictConfig, attack: DictConfig) -> Path | None:
    """The run that attack.transfer_from names (by default the backprop run of the same condition
    and seed), beside `run_dir` in its folder; None when the run is that run (a bp run)."""
    try:
        source = finetune.source_config(_source_probe(cfg, attack))
    except ConfigError as error:
        if "names this run itself" in str(error):
            return None
        raise
    return run_dir.parent / runs.run_id(source)


def _splits_key(cfg: DictConfig) -> str:
    keys = ("dataset", "val_fraction", "val_seed", "train_subset")
    return OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in keys if k in cfg]))


class Loader:
    """Builds Targets, each dataset's splits loaded once."""

    def __init__(self, device: torch.device):
        self.device = device
        self.splits: dict[str, Splits] = {}

    def data(self, cfg: DictConfig) -> Splits:
        key = _splits_key(cfg)
        if key not in self.splits:
            self.splits[key] = Splits(cfg, self.device)
        return self.splits[key]

    def target(self, run_dir: Path, cfg: DictConfig, attack: DictConfig) -> robustness.Target:
        plugins.load(cfg.get("plugins", []))
        splits = self.data(cfg)
        images, labels = splits.test
        index = robustness.attacked_subset(labels.cpu(), attack.subset, attack.seed).to(self.device)
        x = robustness.pixels(images[index])
        torch.manual_seed(cfg.seed)
        model = make_model(cfg, splits.input_shape, splits.num_classes).to(self.device)
        checkpoint = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
        if checkpoint is None:
            raise ConfigError(f"{run_dir / runs.CHECKPOINT} cannot be read: rerun with force=true")
        model.load_state_dict(checkpoint["model"])
        normalize = splits.normalize
        pixel_model = robustness.PixelModel(model, normalize.mean, normalize.std).eval()
        return robustness.Target(run_dir, pixel_model, x, labels[index])


def plan(
    run_dirs: Sequence[Path], attack: DictConfig, keys: dict, loader: Loader, note=print,
    train: Callable[[DictConfig], dict] | None = None,
) -> list[robustness.Target]:  # fmt: skip
    """Every run's Target, with its transfer source, all checked before anything is attacked.
    `train` (asymbp-train's run): a missing transfer source is trained instead of refused."""
    targets, sources = [], {}
    for run_dir in run_dirs:
        metrics = runs.finished_model(run_dir)
        if metrics.get("diverged"):
            note(f"{run_dir}: skipped (diverged: its last model is not a trained one)")
            continue
        cfg = run_config(run_dir, keys)
        target = loader.target(run_dir, cfg, attack)
        if "transfer" in attack.attackers:
            source_dir = transfer_source(run_dir, cfg, attack)
            if source_dir is not None:
                if train is not None:  # trained first, or waited for, as init_from's source
                    finetune.prepare(_source_probe(cfg, attack), train)
                try:
                    runs.finished_model(source_dir)
                except runs.RunError as error:
                    named = source_values(attack)
                    raise ConfigError(
                        f"attacker transfer needs the run {named} of {run_dir}: {error}; or name "
                        "another (attack.transfer_from) or leave transfer out "
                        "(attack.attackers=[exact,rule])"
                    ) from None
                if source_dir not in sources:
                    source_cfg = run_config(source_dir, keys)
                    sources[source_dir] = loader.target(source_dir, source_cfg, attack)
                target.source = sources[source_dir]
        targets.append(target)
    return targets


def attack_runs(
    run_dirs: Sequence[Path], attack: DictConfig, keys: dict | None = None, *, locked=(),
    train: Callable[[DictConfig], dict] | None = None, report=print,
) -> dict[Path, list[dict]]:  # fmt: skip
    """Attack every run of `run_dirs` (checked first, see `plan`); returns each run's rows.
    `locked`: run directories whose lock the caller already holds."""
    robustness.check(attack)
    keys = keys or {}
    device = select_device(keys.get("device", "auto"))
    if keys.get("threads"):
        torch.set_num_threads(keys["threads"])
    targets = plan(run_dirs, attack, keys, Loader(device), note=report, train=train)
    targets.sort(key=lambda t: str(t.source.run_dir) if t.source else str(t.run_dir))
    cache: dict = {}  # transfer examples of one source at a time (targets come by source)
    results, source = {}, None
    for target in targets:
        if (target.source or target).run_dir != source:
            cache.clear()
            source = (target.source or target).run_dir
        if target.run_dir in locked:
            results[target.run_dir] = robustness.evaluate(target, attack, cache, report)
        else:
            with runs.RunLock(target.run_dir):
                results[target.run_dir] = robustness.evaluate(target, attack, cache, report)
    return results


def _check_key_values(keys: dict) -> None:
    threads = keys.get("threads")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ConfigError(f"threads={threads!r} is not an integer >= 1")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        paths, overrides, keys = split_arguments(argv)
        _check_key_values(keys)
        if not paths:
            raise ConfigError(f"no run directories given ({USAGE})")
        attack = compose_attack(overrides)
        if not robustness.enabled(attack):
            raise ConfigError("choose an attack: attack=fgsm, attack=pgd or attack=apgd")
        robustness.check(attack)
        missing = [p for p in paths if not Path(p).is_dir()]
        if missing:
            raise ConfigError(f"not a directory: {', '.join(missing)}")
        run_dirs = find_run_dirs(paths)
        if not run_dirs:
            raise ConfigError(f"no run directories (folders with config.yaml) under {paths[0]}")
        results = attack_runs(run_dirs, attack, keys)
    except ERRORS as error:
        print(f"asymbp-eval: error: {error}", file=sys.stderr)
        return 2
    rows = sum(len(r) for r in results.values())
    where = robustness.RESULTS_DIR
    print(f"{len(results)} runs attacked ({attack.name}): {rows} results in their {where}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
