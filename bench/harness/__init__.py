"""What the benchmark scripts share, split by concern:

- `processes`: start, stop and clean up child processes, free ports, the shared clock, /proc
- `servers`: uvicorn with the standard flags, the Candor server's environment
- `clients`: the websocket load clients (a pool of client processes) and HTTP helpers
- `candor`: the bench database, a site and products through `manage.py candor_site`, signing
- `redis`: the bench Redis databases and their clean-up, the change-channel watcher
- `product`: Candor's own constants (limits, defaults, channel names) the bench relies on

Everything runs with the repository root as the working directory (`python -m bench.<name>`),
so child processes start as `python -m bench.<module>` and uvicorn apps as `bench.<module>:app`.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
