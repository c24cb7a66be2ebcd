def test_principal_and_default_collections(dav):
    r = dav.propfind(f"/{dav.user}/", depth="1")
    assert r.status == 207
    assert f"/{dav.user}/calendar/" in r.text and f"/{dav.user}/contacts/" in r.text
