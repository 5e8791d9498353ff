"""The ``planner`` command line: a thin wrapper over the library's verbs.

Every :class:`~planner.errors.PlannerError` is printed as its message (one ``FILE: field: problem`` line
per error) with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from planner.cost.cli import seconds_arg
from planner.errors import PlannerError

__all__ = ["main"]


def _cmd_validate(args: argparse.Namespace) -> int:
    from planner.validate import check_file

    failed = 0
    for path in args.files:
        try:
            checked = check_file(path, files=not args.no_files, strict=args.strict)
        except PlannerError as err:
            print(err, file=sys.stderr)
            failed = max(failed, err.exit_code)
            continue
        for line in checked.warnings:
            print(line, file=sys.stderr)
        missing = f"; {len(checked.warnings)} named file(s) missing (warnings above)" if checked.warnings else ""
        print(f"{path}: ok ({checked.summary}){missing}")
    return failed


def _cmd_show(args: argparse.Namespace) -> int:
    from planner.ir import load
    from planner.show import describe_graph, format_graph

    desc = describe_graph(load(args.file), seconds=args.seconds)
    print(json.dumps(desc, indent=2) if args.json else format_graph(desc))
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    from planner.cost import format_cost
    from planner.cost.cli import estimate_lengths, read_lengths
    from planner.ir import load

    graph = load(args.file)
    samples = read_lengths(args.lengths) if args.lengths else None
    cost = estimate_lengths(graph, args.lengths, seconds=None if samples else args.seconds, samples=samples,
                            hardware=args.hardware, attention=args.attention, bops=args.bops)  # fmt: skip
    print(json.dumps(cost.to_dict(), indent=2) if args.json else format_cost(cost, graph.name))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from planner.ir import load
    from planner.profile import format_profile, profile

    result = profile(load(args.file), seconds=args.seconds, attention=args.attention)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_profile(result))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from planner.ir import load
    from trainers import load_recipe, train
    from trainers.distributed import PeerError
    from trainers.recipe import with_init

    # The deepspeed launcher passes --local_rank=N (before the subcommand) as well as LOCAL_RANK; the
    # environment wins, the argument stands in where a launcher sets only it.
    local_rank = args.local_rank if args.local_rank is not None else args.launcher_local_rank
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    recipe = load_recipe(args.recipe)
    if args.init is not None:  # e.g. a Pareto point's weights inherited from a supernet
        recipe = with_init(recipe, os.path.abspath(args.init))
    try:
        result = train(load(args.arch), recipe, args.out)
    except PeerError as err:  # another process of the job printed it
        return err.exit_code
    if result.rank == 0:
        job = f", {result.world_size} processes" if result.world_size > 1 else ""
        print(f"{args.out}: trained to step {result.step} (started at {result.resumed_from}{job})")
    return 0


def _cmd_supernet_train(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from planner.search import SpaceSampler, load_space
    from trainers import load_recipe
    from trainers.distributed import PeerError
    from trainers.recipe import SupernetConfig, recipe_errors
    from trainers.supernet import train_supernet

    local_rank = args.local_rank if args.local_rank is not None else args.launcher_local_rank
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    recipe = load_recipe(args.recipe)
    space = load_space(args.space)
    cfg = recipe.supernet or SupernetConfig()
    with recipe_errors(recipe):  # supernet.partition names one of the space's choices
        sampler = SpaceSampler(space, samples=cfg.cover, seed=recipe.seed, partition=cfg.partition)
    try:
        result = train_supernet(sampler, recipe, args.out, space_text=Path(args.space).read_text(encoding="utf-8"),
                                name=Path(args.space).stem)  # fmt: skip
    except PeerError as err:
        return err.exit_code
    if result.rank == 0:
        parts = f", the extremes of each of {len(sampler.parts())} {cfg.partition}s" if cfg.partition else ""
        print(f"{args.out}: supernet of {args.space} ({len(sampler.cover)} cover candidates{parts}) trained to step "
              f"{result.step} (started at {result.resumed_from})")  # fmt: skip
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    import yaml

    from trainers import dump_recipe, load_recipe

    print(yaml.safe_dump(dump_recipe(load_recipe(args.recipe)), sort_keys=False), end="")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from trainers.evaluate import decode_files, evaluate

    if args.wav is not None:
        if args.checkpoint is not None:
            raise PlannerError("--checkpoint: only with --task (decoding runs the run's or the export's own weights)")
        print(json.dumps(decode_files(args.run, args.wav), indent=2))
        return 0
    print(json.dumps(evaluate(args.run, args.task, checkpoint=args.checkpoint), indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import os

    from planner.compress import export, load_checkpoint_, materialize
    from planner.ir import load

    if os.path.isdir(args.file):  # a run folder (or its best/): the trained model and its task head
        from trainers.evaluate import export_run

        if args.checkpoint is not None:
            raise PlannerError(f"--checkpoint: not with a run folder ({args.file} exports its own weights; "
                               f"{args.file}/best its held-out best)")  # fmt: skip
        manifest = export_run(args.file, args.out, force=args.force)
        sizes, head = manifest["payload_bytes"], manifest.get("task")
        with_head = f", {head['kind']} head ({sizes.get('task', 0):,} bytes)" if head else ", no task head"
        print(f"{args.out}: {args.file}, {sizes['weights']:,} weight bytes + {sizes['state']:,} state bytes{with_head}")
        return 0
    graph = load(args.file)
    model = materialize(graph)
    if args.checkpoint is not None:
        import pickle
        import zipfile

        import torch

        try:  # data only: a pickle that would import or call anything is refused before it runs
            state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile) as err:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise PlannerError(f"{args.checkpoint}: cannot read the checkpoint as data with weights_only=True ({reason}); "
                               "pass a torch.save'd state dict") from None  # fmt: skip
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise PlannerError(f"{args.checkpoint}: expected a state dict (or a dict with 'model')")
        load_checkpoint_(model, state)
    manifest = export(model, graph, args.out, force=args.force)
    sizes = manifest["payload_bytes"]
    print(f"{args.out}: {graph.name}, {sizes['weights']:,} weight bytes + {sizes['state']:,} state bytes")
    return 0


def _cmd_data_demo(args: argparse.Namespace) -> int:
    from trainers.demo import build_demo_corpus

    c = build_demo_corpus(args.out, seed=args.seed, synthetic=args.synthetic, words=args.words,
                          probe_steps=args.probe_steps, force=args.force)  # fmt: skip
    n, s = c.info["utterances"], c.info["seconds"]
    sets = ", ".join(f"{k} {n[k]} ({s[k]} s)" for k in n)
    real = (
        f"; real speakers: {', '.join(c.info['voices']['real'])}"
        if c.info["voices"]["real"]
        else (
            ""
            if c.info["kind"] == "synthetic"
            else "; no real recordings (apt-get install asterisk-core-sounds-en-wav)"
        )
    )
    print(f"{c.root}: {c.info['kind']} corpus, {len(c.info['classes'])} words: {sets}{real}")
    return 0


def _cmd_data_scan(args: argparse.Namespace) -> int:
    from trainers.data import scan_folder

    m = scan_folder(args.root, args.manifest)
    print(f"{args.manifest}: {len(m.utterances)} files under {m.root}")
    return 0


def _cmd_data_report(args: argparse.Namespace) -> int:
    from trainers.demo import format_rows, packed_matches, quickstart_rows

    rows = quickstart_rows(args.out)
    if not rows:
        raise PlannerError(f"{args.out}: no quickstart results found (run examples/quickstart.sh)")
    print(format_rows(rows))
    same = packed_matches(args.out)
    if same is False:
        print(
            f"{args.out}: the packed model does not score as the trained one (eval/packed-*.json differ)",
            file=sys.stderr,
        )
        return 1
    if same:
        print("packed model: the same probe results as the trained QAT model")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planner",
        description="Declarative architecture search and compression planning for speech encoders. "
        "Each command reads YAML files; run `planner COMMAND -h` for its options.",
    )
    # `deepspeed ... $(which planner) train ...` runs `planner --local_rank=N train ...` (for train only)
    parser.add_argument("--local_rank", "--local-rank", dest="launcher_local_rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        help="check architecture, search-space, recipe or task files (kind told by their keys) and the files they name; exit 2 if any is invalid",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--no-files",
        action="store_true",
        help="check the contents only, not that the files a recipe, task or study names exist",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="a named file that does not exist is an error (default: a warning, exit 0)",
    )
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("show", help="print the resolved graph: node, kind, widths, frames, bits, N:M")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seconds", type=seconds_arg, default=1.0, help="audio length for the frames column (default 1)")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("cost", help="price an architecture: params, storage, MACs, FLOPs, BOPs, latency, per layer")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seconds", type=seconds_arg, default=None, help="one utterance of this length (default 1)")
    p.add_argument("--lengths", metavar="FILE", help="utterance lengths in samples, one per line; costs summed")
    p.add_argument("--hardware", metavar="NAME|YAML", help="catalog name (a100) or a YAML file: adds latency_s")
    p.add_argument(
        "--attention",
        choices=("exact", "dense"),
        default="exact",
        help="exact attended pairs (default) or dense T x T as the model executes",
    )
    p.add_argument(
        "--bops",
        choices=("bayesian_bits", "jeon2023"),
        default="bayesian_bits",
        help="BOP/FLOP convention: bayesian_bits (default, w x a bits per MAC) or jeon2023 (Table 1)",
    )
    p.set_defaults(func=_cmd_cost)

    p = sub.add_parser("profile", help="materialize, measure params and MACs with DeepSpeed, compare")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seconds", type=seconds_arg, default=None, help="utterance length (default 1)")
    p.add_argument(
        "--attention",
        choices=("exact", "dense"),
        default="dense",
        help="analytic mode compared (default dense: what the model executes)",
    )
    p.set_defaults(func=_cmd_profile)

    from planner.search._cli import add_commands as _add_search_commands  # sample, search, pareto

    _add_search_commands(sub)

    p = sub.add_parser("export", help="write packed weights, architecture and manifest to a directory")
    p.add_argument(
        "file",
        metavar="ARCH.yaml|RUN",
        help="an architecture file, or a run folder of planner train (or its best/): its weights and task head",
    )
    p.add_argument("--checkpoint", metavar="CKPT.pt", help="state dict to export (default: fresh initial weights)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be empty unless --force)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty directory (the new export is built beside it and swapped in whole)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="distil an architecture with a recipe into a run folder (again: resume)")
    p.add_argument("arch", metavar="ARCH.yaml")
    p.add_argument("--recipe", required=True, metavar="RECIPE.yaml")
    p.add_argument("--out", required=True, metavar="OUT", help="run folder; refused if it holds another run")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (a .safetensors of a Pareto export, or "
                                                     "a torch state dict) instead of the recipe's init")  # fmt: skip
    p.add_argument(
        "--local_rank",
        "--local-rank",
        type=int,
        default=None,
        help="set by launchers (deepspeed); the environment's LOCAL_RANK takes precedence",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("supernet", help="weight-sharing supernets of a space (train one: planner supernet train)")
    ssub = p.add_subparsers(dest="supernet_command", required=True, metavar="COMMAND")
    q = ssub.add_parser("train", help="train the supernet of a space with a distillation recipe (again: resume)")
    q.add_argument("space", metavar="SPACE.yaml")
    q.add_argument("--recipe", required=True, metavar="RECIPE.yaml", help="a distillation recipe (its supernet: "
                                                                         "section sets the sandwich)")  # fmt: skip
    q.add_argument("--out", required=True, metavar="OUT", help="run folder; refused if it holds another run")
    q.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by launchers (deepspeed)")
    q.set_defaults(func=_cmd_supernet_train)

    p = sub.add_parser("recipe", help="print a training recipe fully resolved (every default filled in)")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.set_defaults(func=_cmd_recipe)

    p = sub.add_parser("data", help="corpora: build the offline demo corpus, scan a folder into a manifest")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data.add_parser("demo", help="spoken digits (espeak-ng voices, held-out voices, real speakers where "
                                     "installed) with manifests, labels and probe tasks")  # fmt: skip
    q.add_argument("out", metavar="OUT", help="a new or empty folder")
    q.add_argument("--seed", type=int, default=0, help="draws each utterance's pitch: same seed, same files")
    q.add_argument("--synthetic", action="store_true", help="tone words instead of espeak-ng speech")
    q.add_argument("--words", type=int, default=10, help="how many of the ten digits (default 10)")
    q.add_argument("--probe-steps", type=int, default=300, help="steps of the probe tasks written (default 300)")
    q.add_argument("--force", action="store_true", help="replace an earlier demo corpus in OUT")
    q.set_defaults(func=_cmd_data_demo)
    q = data.add_parser("scan", help="write a manifest of every .wav/.flac/.ogg under a folder (e.g. LibriSpeech)")
    q.add_argument("root", metavar="FOLDER")
    q.add_argument("manifest", metavar="OUT.tsv")
    q.set_defaults(func=_cmd_data_scan)
    q = data.add_parser("report", help="print the table of an examples/quickstart.sh folder")
    q.add_argument("out", metavar="OUT")
    q.set_defaults(func=_cmd_data_report)

    p = sub.add_parser("evaluate", help="linear probe on a model's frozen features (--task), or its task head on audio "
                                        "files (--wav); prints JSON")  # fmt: skip
    p.add_argument("run", metavar="RUN|PACKED", help="a run folder of planner train (or its best/), or a packed export")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", metavar="TASK.yaml", help="train/test label TSVs and probe settings")
    what.add_argument("--wav", nargs="+", metavar="FILE", help="audio files to decode with the trained task head")
    p.add_argument("--checkpoint", metavar="CKPT.pt", help="encoder state dict (default: RUN/student.pt)")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``planner`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is met below and not at exit
        return code
    except BrokenPipeError:  # `planner ... | head`: the reader has what it wanted
        _silence_stdout()
        return 141  # as a command killed by SIGPIPE
    except PlannerError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so the interpreter's final flush of a closed pipe prints nothing."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured): nothing to flush at exit
        pass


if __name__ == "__main__":
    sys.exit(main())
