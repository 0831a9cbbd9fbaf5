"""Rendering speed: our pipeline against the reference Node MJML compiler, in the same run.

    .venv/bin/python bench/render.py [--runs 200] [--process-runs 10]

Two figures, each a ratio against a baseline measured here and now:
1. in-process: parse + render of the 10-item example edition (Markdown → MJML → HTML → premailer,
   plus the text part), median of ``--runs``, against Node's ``mjml2html`` compiling the same
   MJML alone (the same number of runs, inside warmed-up Node processes). Goal: ≤ 1×.
2. whole process: ``newsletter build`` (start-up included) against the Node ``mjml`` CLI compiling
   the same MJML file to HTML, median of ``--process-runs`` each. Goal: ≤ 0.5×.

Both are measured in alternation (ours, theirs, ours, …) so that load from other processes on
the machine falls on both alike.

The Node compiler comes from bench/package.json; it is installed into bench/node_modules (git
ignored) with ``npm install`` when missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EDITION = REPO / "editions" / "2026-11-24.md"
NEWSLETTER = Path(sys.executable).parent / "newsletter"

NODE_SCRIPT = """
const fs = require("fs");
const mjml2html = require("mjml");
const [file, runs] = [process.argv[2], Number(process.argv[3])];
const src = fs.readFileSync(file, "utf8");
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function timed(n) {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    const out = await Promise.resolve(mjml2html(src));
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (out.errors && out.errors.length) { console.error(JSON.stringify(out.errors)); process.exit(1); }
  }
  return times;
}
(async () => {
  await timed(10);
  const early = await timed(runs);   // what a short-lived process gets
  await timed(200);                  // let V8 optimise fully
  const warm = await timed(runs);
  console.log(JSON.stringify({ early_ms: median(early), warm_ms: median(warm) }));
})();
"""


def ensure_node_mjml() -> Path:
    """bench/node_modules/.bin/mjml, installed with npm when missing."""
    binary = BENCH / "node_modules" / ".bin" / "mjml"
    if not binary.exists():
        if shutil.which("npm") is None:
            sys.exit("npm is needed for the reference compiler (Node 18+ with npm)")
        print("installing the reference mjml compiler (npm install in bench/) …", file=sys.stderr)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH, check=True)
    return binary


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def in_process(runs: int, mjml_file: Path, rounds: int = 4) -> tuple[float, float, float, int]:
    """Medians of ours and Node's, measured in alternating rounds so that load from other
    processes on the machine falls on both alike."""
    from newsletter.config import load_config
    from newsletter.edition.source import load_edition
    from newsletter.render.html import render_edition

    config = load_config(REPO / "newsletter.toml")

    def render():
        return render_edition(load_edition(EDITION, config=config), config)

    html_bytes = len(render().html.encode("utf-8"))  # warm-up: imports, template compile, CSS cache
    script = mjml_file.parent / "bench.js"
    script.write_text(NODE_SCRIPT, encoding="utf-8")
    per_round = max(1, runs // rounds)
    ours, theirs, early = [], [], []
    for _ in range(rounds):
        ours.append(median_ms(render, per_round))
        out = subprocess.run(["node", str(script), str(mjml_file), str(per_round)], cwd=BENCH, check=True,
                             capture_output=True, text=True,
                             env={"NODE_PATH": str(BENCH / "node_modules"), "PATH": "/usr/local/bin:/usr/bin:/bin"})
        figures = json.loads(out.stdout)
        theirs.append(figures["warm_ms"])
        early.append(figures["early_ms"])
    return statistics.median(ours), statistics.median(theirs), statistics.median(early), html_bytes


def whole_process(runs: int, mjml_file: Path, node_mjml: Path, out_dir: Path) -> tuple[float, float]:
    """Median wall time of each command, run alternately."""
    build = [str(NEWSLETTER), "--config", str(REPO / "newsletter.toml"), "build", str(EDITION), "-o", str(out_dir)]
    node = [str(node_mjml), str(mjml_file), "-o", str(out_dir / "node.html")]
    for cmd in (build, node):  # warm the page cache and .pyc files
        subprocess.run(cmd, check=True, capture_output=True)
    ours, theirs = [], []
    for _ in range(runs):
        ours.append(median_ms(lambda: subprocess.run(build, check=True, capture_output=True), 1))
        theirs.append(median_ms(lambda: subprocess.run(node, check=True, capture_output=True), 1))
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--process-runs", type=int, default=15)
    args = parser.parse_args()
    node_mjml = ensure_node_mjml()

    from newsletter.config import load_config
    from newsletter.edition.source import load_edition
    from newsletter.render.html import render_mjml

    config = load_config(REPO / "newsletter.toml")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        mjml_file = tmp_path / "edition.mjml"
        mjml_file.write_text(render_mjml(load_edition(EDITION, config=config), config), encoding="utf-8")
        ours, node, node_early, size = in_process(args.runs, mjml_file)
        print(f"edition: {EDITION.relative_to(REPO)} (10 items), HTML {size / 1024:.1f} KB")
        print(f"in-process render, median of {args.runs}:")
        print(f"  newsletter parse+render (HTML+text):          {ours:7.2f} ms")
        print(f"  baseline Node mjml2html, V8 fully warmed:     {node:7.2f} ms")
        print(f"  (Node mjml2html, first runs of a process:     {node_early:7.2f} ms)")
        print(f"  ratio: {ours / node:.2f}x against warmed Node  (goal <= 1x); "
              f"{ours / node_early:.2f}x against its first runs")
        ours_p, node_p = whole_process(args.process_runs, mjml_file, node_mjml, tmp_path)
        print(f"whole process, median of {args.process_runs}:")
        print(f"  newsletter build:        {ours_p:7.1f} ms")
        print(f"  baseline Node mjml CLI:  {node_p:7.1f} ms")
        print(f"  ratio: {ours_p / node_p:.2f}x  (goal <= 0.5x)")


if __name__ == "__main__":
    main()
