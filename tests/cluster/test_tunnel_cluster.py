"""An app server's tunnel on one node of a cluster: its REST calls act hub-wide (socketio
spec 4.6: that is what replaces the Socket.IO adapter), answered once Redis has them."""

from __future__ import annotations

import json

from tests.tunnel_client import TunnelClient

from .conftest import ACCESS_KEY, Cluster
from .test_cluster import connect, receive


async def test_rest_over_a_tunnel_reaches_other_nodes(cluster: Cluster) -> None:
    hub = "tunnelcluster"
    first, second = cluster.nodes[0], cluster.nodes[1]
    async with await TunnelClient.open(first, hub, key=ACCESS_KEY) as tunnel:
        ws, connection_id = await connect(second, hub)
        try:
            body = json.dumps({"groups": ["0~Lw~"], "filter": f"connectionId eq '{connection_id}'"})
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/:addToGroups", body.encode(), "application/json"
            )
            assert answer.status == 200
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/groups/0~Lw~/:send", b'42["x"]', "text/plain"
            )
            assert answer.status == 202
            assert (await receive(ws))["data"] == '42["x"]'
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/connections/{connection_id}/:send", b"2", "text/plain"
            )
            assert answer.status == 202
            assert (await receive(ws))["data"] == "2"
        finally:
            await ws.close()
