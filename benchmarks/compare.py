"""Compare benchmark runs: before against after, with the run-to-run noise beside it.

    python -m benchmarks.compare --before A/latest.json C/latest.json --after B/latest.json D/latest.json \\
        --out benchmarks/results/accelerators/comparison.md

Each run's figure is a contender's ratio to native PyTorch eager in the same
run (`vs_torch_eager`), so the machine's drift between runs cancels. The
change of a case is the mean ratio after over the mean ratio before. The
noise is the largest relative gap between two runs of the same code (before
against before, after against after). A change counts as a regression only
when it is a loss larger than that noise.
"""

import argparse
import json
from pathlib import Path


def ratios(path):
    """{(case, contender, phase): ratio to torch eager} of one run's JSON."""
    cases = json.loads(Path(path).read_text())["cases"]
    found = {}
    for case, record in cases.items():
        for contender, result in record.get("contenders", {}).items():
            if contender == "torch_eager" or not isinstance(result, dict):
                continue
            for phase in ("train", "infer"):
                value = (result.get(phase) or {}).get("vs_torch_eager")
                if isinstance(value, (int, float)):
                    found[(case, contender, phase)] = float(value)
    return found


def _spread(runs, key):
    values = [r[key] for r in runs if key in r]
    return (max(values) / min(values) - 1) if len(values) > 1 else None


def compare(before, after):
    """Rows (case, contender, phase, before, after, change, noise, verdict)."""
    rows = []
    for key in sorted(set().union(*before) & set().union(*after)):
        b = [r[key] for r in before if key in r]
        a = [r[key] for r in after if key in r]
        mean_b, mean_a = sum(b) / len(b), sum(a) / len(a)
        change = mean_a / mean_b - 1
        spreads = [s for s in (_spread(before, key), _spread(after, key)) if s is not None]
        noise = max(spreads) if spreads else None
        if noise is None:
            verdict = "one run each"
        elif change < -noise:
            verdict = "slower, beyond noise"
        elif change > noise:
            verdict = "faster, beyond noise"
        else:
            verdict = "within noise"
        rows.append((*key, mean_b, mean_a, change, noise, verdict))
    return rows


def markdown(rows, before_paths, after_paths):
    lines = [
        f"Before: {', '.join(map(str, before_paths))}; after: {', '.join(map(str, after_paths))}.",
        "Ratios are to native PyTorch eager in the same run (mean over the runs); "
        "noise is the largest gap between two runs of the same code.",
        "",
        "| case | contender | phase | before | after | change | noise | verdict |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for case, contender, phase, b, a, change, noise, verdict in rows:
        noise_cell = "-" if noise is None else f"{noise:.0%}"
        lines.append(f"| {case} | {contender} | {phase} | {b:.2f}x | {a:.2f}x | {change:+.0%} "
                     f"| {noise_cell} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", nargs="+", required=True, help="latest.json of runs before")
    parser.add_argument("--after", nargs="+", required=True, help="latest.json of runs after")
    parser.add_argument("--out", help="write the Markdown table here too")
    args = parser.parse_args(argv)
    rows = compare([ratios(p) for p in args.before], [ratios(p) for p in args.after])
    text = markdown(rows, args.before, args.after)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
