"""Time and peak memory of `fewshot adapt` with no options (shipped example photo, shipped base
model, default strategy), per stage.

    python benchmarks/adapt.py [--strategy S] [--repeat N] [--generator G [--motion M.npz]] [--write-results [--section NAME]]

Peak memory is the process's peak resident set size after each stage (it only grows).
``--write-results`` replaces the ``adapt`` section of docs/results.md (or ``--section``) with the table it
prints. ``--generator`` / ``--motion``: the synthesis (default: the config's, ``warp`` and the FACS fields).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategy", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--generator", default=None, help="synthesis generator (default: the config's)")
    ap.add_argument("--motion", default=None, help="AU motion model .npz (e.g. generators/data/ict_motion.npz)")
    ap.add_argument("--write-results", action="store_true", help="replace the 'adapt' section of docs/results.md")
    ap.add_argument("--section", default="adapt", help="the docs/results.md block --write-results replaces")
    a = ap.parse_args()
    t_import = time.perf_counter()
    from fewshot.adaptation import AdaptConfig, StrategyConfig, adapt_person
    from fewshot.data import example_photo

    t_import = time.perf_counter() - t_import
    cfg = AdaptConfig() if a.strategy is None else AdaptConfig(strategy=StrategyConfig(name=a.strategy))
    cfg = cfg.override({k: v for k, v in (("synthesis.generator", a.generator), ("synthesis.motion", a.motion)) if v})
    print(f"{platform.machine()}, {os.cpu_count()} cores; strategy {cfg.strategy.name}, generator {cfg.synthesis.generator}; "
          f"imports {t_import:.1f} s")
    runs = []
    for r in range(a.repeat):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            res = adapt_person(str(example_photo()), config=cfg, out_dir=os.path.join(d, "out"), progress=False)
            total = time.perf_counter() - t
        print(f"run {r + 1}: {total:.1f} s in adapt_person (+ {t_import:.1f} s imports)")
        print(f"  {'stage':16s} {'seconds':>8s} {'peak RSS MB':>12s}")
        for s in res.report.stages:
            print(f"  {s['stage']:16s} {s['seconds']:8.2f} {s['peak_rss_mb']:12.0f}")
        runs.append((total, res.report.stages))
    if a.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        stages = [s["stage"] for s in runs[0][1]]
        headers = ["stage"] + [f"run {r + 1}: s" for r in range(len(runs))] + ["peak RSS MB"]
        rows = [[name] + [f"{dict((s['stage'], s['seconds']) for s in st)[name]:.2f}" for _, st in runs]
                + [f"{max(s['peak_rss_mb'] for _, st in runs for s in st if s['stage'] == name):.0f}"] for name in stages]
        rows.append(["**adapt_person, all stages**"] + [f"**{total:.1f}**" for total, _ in runs] + ["-"])
        given = bool(a.generator or a.motion or a.strategy)
        note = (f"`fewshot adapt` with {'these options' if given else 'no options'} (shipped example photo and base model, "
                f"strategy `{cfg.strategy.name}`, generator `{cfg.synthesis.generator}`, motion `{cfg.synthesis.motion or 'facs'}`), "
                f"timed inside `adapt_person` (imports, {t_import:.1f} s here, not included).")
        update_section(a.section, note + "\n\n" + markdown_table(headers, rows), command=invocation())


if __name__ == "__main__":
    main()
