from tests.conftest import login


def test_login_and_dashboard(client, make):
    doctor = make.rural()
    r = login(client, doctor)
    assert r.status_code == 302
    r = client.get("/")
    assert r.status_code == 200
    assert b"My consult requests" in r.data
