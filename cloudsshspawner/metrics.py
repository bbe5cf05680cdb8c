"""CloudSSHSpawner's Prometheus metrics (prometheus_client's default registry, which
JupyterHub serves at ``/hub/metrics``; see docs/metrics.md).

Labels take values from :data:`RECONNECT_RESULTS` only: never a user, server or host name.
"""

from prometheus_client import Counter

#: ``result`` label values: the connection is back, or it stays down because the machine
#: showed another host key than the pinned one
RECONNECT_RESULTS = ("reconnected", "host_key_changed")

TUNNEL_RECONNECTS = Counter(
    "cloudsshspawner_tunnel_reconnects",
    "SSH connections of notebook servers that dropped and were re-established "
    "(result=reconnected) or given up because the host key changed (result=host_key_changed)",
    ["result"],
)
for _result in RECONNECT_RESULTS:  # both series exist from the start, at 0
    TUNNEL_RECONNECTS.labels(result=_result)
