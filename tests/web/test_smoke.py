from tests.conftest import decision


async def test_post_then_read_back(any_client):
    sent = decision(decision="block")
    response = await any_client.post("/decisions", json=sent)
    assert response.status == 200
    stored = await (await any_client.get(f"/decisions/{sent['decision_id']}")).json()
    assert stored["decision"] == "block"
    session = await (await any_client.get("/sessions/sess-1")).json()
    assert (session["decision_count"], session["blocked_count"]) == (1, 1)
