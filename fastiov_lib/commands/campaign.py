"""`fastiov-artifact campaign plan --testbed FILE --profile NAME [--json]`: the evaluation as boots."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("campaign", help="the whole evaluation of a profile as boots (host kernel, rounds, "
                                               "needs, steps between boots); nothing is changed")
    p.add_argument("action", choices=["plan"], help="plan: print the boots, their rounds and needs")
    p.add_argument("--testbed", required=True, help="testbed YAML file")
    p.add_argument("--profile", default="paper", help="smoke, default, paper or a profile YAML (default paper)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastiov_lib.bench.campaign import format_campaign, plan_campaign
    from fastiov_lib.config import load_profile, load_testbed
    from fastiov_lib.testbeds import backend_for

    camp = plan_campaign(backend_for(load_testbed(args.testbed)), load_profile(args.profile))
    print(json.dumps(camp.as_dict(), indent=2) if args.json else format_campaign(camp))
    return 0
