"""One rank of test_netns.py, started inside its own network namespace: joins the gloo group, runs one case, exits.

Usage: _netns_rank.py CASE KWARGS_JSON, with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and
GLOO_SOCKET_IFNAME in the environment. Prints the case's value as one JSON line on stdout;
a failure goes to stderr with exit status 1.
"""

from __future__ import annotations

import datetime
import json
import os
import sys


def main() -> None:
    case, kwargs = sys.argv[1], json.loads(sys.argv[2])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    import cases

    value = getattr(cases, case)(cases.Context("torch", rank, world), **kwargs)
    print(json.dumps(value), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
