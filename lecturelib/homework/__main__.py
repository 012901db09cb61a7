"""Command line: ``python -m lecturelib.homework {release,check,grade} ...`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lecturelib.homework", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("release", help="write the student copy (exercise bodies stubbed, outputs cleared)")
    p.add_argument("out_dir", help="folder to write, outside the repository")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")

    p = sub.add_parser("check", help="run the public tests and report per exercise")
    p.add_argument("chapter", nargs="?", default=None, help="e.g. optim or 02_optim (default: all)")
    p.add_argument("--test-timeout", type=float, default=120.0, help="seconds per test (default 120)")

    p = sub.add_parser("grade", help="grade a folder of submissions (folders or .zip of the student copy)")
    p.add_argument("submissions_dir")
    p.add_argument("--out", default="grades.csv", help="CSV to write (default grades.csv)")
    p.add_argument("--feedback", default=None, help="folder for per-student feedback (default <out>_feedback/)")
    p.add_argument("--hidden", default=None, help="hidden tests folder (default homework/hidden_tests/)")
    p.add_argument("--test-timeout", type=float, default=60.0, help="seconds per test (default 60)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per submission (default 600)")
    p.add_argument("--max-output", type=int, default=1_000_000, help="bytes a submission may print")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    args = parser.parse_args(argv)

    if args.command == "release":
        from .release import ReleaseError, release

        try:
            written = release(args.out_dir, force=args.force)
        except ReleaseError as exc:
            print(f"release failed: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} files to {args.out_dir}; see {args.out_dir}/HOMEWORK.md")
        return 0
    if args.command == "check":
        from .check import check

        try:
            results, text = check(args.chapter, test_timeout=args.test_timeout)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(text, end="")
        return 0 if results and all(r.status == "pass" for r in results) else 1
    from .grade import GradeSettings, grade

    settings = GradeSettings(test_timeout=args.test_timeout, total_timeout=args.timeout,
                             max_output=args.max_output)
    totals = grade(args.submissions_dir, args.out, hidden=args.hidden, feedback_dir=args.feedback,
                   settings=settings, jobs=args.jobs)
    print(f"graded {len(totals)} submissions -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
