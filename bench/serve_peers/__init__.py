"""The peer servers and the clients of bench/serve_load.py.

- `oip`, `bare`, `litserve_peer`, `kserve_peer`: the servers compared with `shiftray serve`, each a
  script run as its own process (LitServe and KServe from the peers' venv, see serve_load.py);
- `runs`: the run directories and the request bodies (the same bytes for every server);
- `servers`: starting, checking, measuring and stopping those processes;
- `wrk` (+ ``post.lua``): the closed-loop client; `overload`: the open-loop one;
- `summary`: medians over rounds, ratios to the bare server in the same round, the goals.
"""
