"""Parsers and the trust decision of headerauthenticator, without a hub."""

import ipaddress

import pytest

from headerauthenticator import HeaderParseError, JSONParser, Parser, RegexUsernameParser
from headerauthenticator.parsers import json_depth, loads_bounded, split_groups
from headerauthenticator.trust import parse_address, parse_networks, resolve_peer, trusts_everyone

EMAIL = r"([a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+)"


def test_parser_passes_value_through():
    assert Parser().parse("alice") == "alice"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://oid.example.org/openid/id/jane.doe@uni.example.dk", "jane_doe_uni_example_dk"),
        ("/C=DK/O=NBI/CN=Jane/emailAddress=jane@nbi.dk", "jane_nbi_dk"),
        ("jane@nbi.dk", "jane_nbi_dk"),
    ],
)
def test_regex_parser_extracts_and_replaces(value, expected):
    parser = RegexUsernameParser(username_extract_regex=EMAIL, replace_extract_chars={"@": "_", ".": "_"})
    parser.validate()
    assert parser.parse(value) == expected


def test_regex_parser_without_replacements_keeps_match():
    parser = RegexUsernameParser(username_extract_regex=r"uid=(\w+)")
    assert parser.parse("cn=Jane,uid=jdoe,dc=example") == "jdoe"


def test_regex_parser_no_match_is_403():
    parser = RegexUsernameParser(username_extract_regex=EMAIL)
    with pytest.raises(HeaderParseError) as e:
        parser.parse("not-an-email")
    assert e.value.status == 403
    assert "not-an-email" not in e.value.message  # header values stay out of messages


@pytest.mark.parametrize("regex", [None, r"\w+", r"(\w+)@(\w+)"])
def test_regex_parser_needs_exactly_one_group(regex):
    with pytest.raises(ValueError, match="username_extract_regex"):
        RegexUsernameParser(username_extract_regex=regex).validate()


def test_regex_parser_accepts_published_class_attribute_style(monkeypatch):
    # published configs assign the class attribute, replacing the trait by a plain string
    monkeypatch.setattr(RegexUsernameParser, "username_extract_regex", EMAIL)
    parser = RegexUsernameParser()
    parser.validate()
    assert parser.parse("x jane@nbi.dk y") == "jane@nbi.dk"


@pytest.mark.parametrize(
    "value, expected",
    [('{"HOST": "h", "N": 1}', {"HOST": "h", "N": 1}), ('"text"', "text"), ("[1, 2]", [1, 2])],
)
def test_json_parser(value, expected):
    assert JSONParser().parse(value) == expected


@pytest.mark.parametrize(
    "value", ["{not json", '{"a": 1', "[" * 100000, "secret-token-xyz", "NaN", '[-Infinity]', "1e999", "1" * 5000]
)
def test_json_parser_bad_json_is_400_without_the_value(value):
    with pytest.raises(HeaderParseError) as e:
        JSONParser().parse(value)
    assert e.value.status == 400
    assert "secret-token-xyz" not in e.value.message


@pytest.mark.parametrize(
    "value, expected",
    [
        ("staff, students;staff", ["staff", "students"]),
        ('["a", "b"]', ["a", "b"]),
        ("", []),
        (["x", " y "], ["x", "y"]),
    ],
)
def test_split_groups(value, expected):
    assert split_groups(value) == expected


@pytest.mark.parametrize(
    "text, depth",
    [("1", 0), ('{"a": [1, {"b": []}]}', 4), ('["[[[", "{{"]', 1), (r'["\"[[["]', 1), ("[" * 4000, 4000)],
)
def test_json_depth_skips_strings(text, depth):
    assert json_depth(text) == depth


def test_deep_json_is_refused_before_decoding():
    """Deeper than the limit is a 400 naming the limit, however deep (no RecursionError)."""
    for text in ("[" * 4000, "[" * 33 + "]" * 33, '{"a":' * 5000):
        with pytest.raises(HeaderParseError) as e:
            JSONParser().parse(text)
        assert e.value.status == 400 and "more than 32 levels" in e.value.message
    assert JSONParser(max_depth=40).parse("[" * 33 + "]" * 33) == eval("[" * 33 + "]" * 33)
    assert loads_bounded('{"a": {"b": 1}}', 2, "x") == {"a": {"b": 1}}
    with pytest.raises(HeaderParseError, match="x is nested more than 1 levels deep"):
        loads_bounded('{"a": {"b": 1}}', 1, "x")


@pytest.mark.parametrize("value", ['["a", 1]', "[broken", '[{"a": 1}]', '[["a"]]', "[" * 4000])
def test_split_groups_rejects_bad_lists(value):
    with pytest.raises(HeaderParseError) as e:
        split_groups(value)
    assert e.value.status == 400


# ---- trust ------------------------------------------------------------------------------
HUB_PROXY = parse_networks(["127.0.0.1", "::1"], "hub_proxy_ips")
NGINX = parse_networks(["127.0.0.20", "10.1.0.0/16"], "trusted_proxy_ips")


def test_parse_networks_rejects_garbage():
    with pytest.raises(ValueError, match="trusted_proxy_ips: 'nginx.local'"):
        parse_networks(["nginx.local"], "trusted_proxy_ips")


@pytest.mark.parametrize(
    "entries, everyone",
    [([], True), (["0.0.0.0/0"], True), (["::/0"], True), (["10.0.0.0/8"], False), (["0.0.0.0/1"], False)],
)
def test_trusts_everyone(entries, everyone):
    assert trusts_everyone(parse_networks(entries, "x")) is everyone


@pytest.mark.parametrize(
    "text, expected",
    [("127.0.0.5", "127.0.0.5"), ("::ffff:10.1.2.3", "10.1.2.3"), ("[::1]:443", "::1"), ("fe80::1%eth0", "fe80::1"), ("bogus", None)],
)
def test_parse_address(text, expected):
    assert parse_address(text) == (ipaddress.ip_address(expected) if expected else None)


@pytest.mark.parametrize(
    "direct, xff, trusted, judged",
    [
        # through nginx: nginx appends the browser, CHP appends nginx
        ("127.0.0.1", ["10.9.9.9, 127.0.0.20"], True, "127.0.0.20"),
        ("127.0.0.1", ["127.0.0.1,127.0.0.20"], True, "127.0.0.20"),
        # straight to CHP: CHP appends the client itself
        ("127.0.0.1", ["127.0.0.1"], False, "127.0.0.1"),
        # straight to CHP with a forged X-Forwarded-For naming nginx: the right-most entry wins
        ("127.0.0.1", ["127.0.0.20,127.0.0.1"], False, "127.0.0.1"),
        ("127.0.0.1", ["127.0.0.20", "127.0.0.1"], False, "127.0.0.1"),
        # CHP listening on a dual-stack socket reports IPv4-mapped addresses
        ("::1", ["::ffff:10.1.4.4"], True, "10.1.4.4"),
        # a peer that is not the hub's proxy: X-Forwarded-For is ignored
        ("10.5.5.5", ["127.0.0.20"], False, "10.5.5.5"),
        ("10.1.0.9", ["6.6.6.6"], True, "10.1.0.9"),
        # garbage
        ("127.0.0.1", ["not-an-ip"], False, "not-an-ip"),
    ],
)
def test_resolve_peer(direct, xff, trusted, judged):
    peer = resolve_peer(direct, xff, HUB_PROXY, NGINX)
    assert (peer.trusted, peer.address) == (trusted, judged)


def test_resolve_peer_without_forwarded_for_from_hub_proxy_is_refused():
    peer = resolve_peer("127.0.0.1", [], HUB_PROXY, NGINX)
    assert not peer.trusted and "without passing its proxy" in peer.reason


def test_resolve_peer_reports_client_only_for_logs():
    peer = resolve_peer("127.0.0.1", ["10.9.9.9, 127.0.0.20"], HUB_PROXY, NGINX)
    assert peer.client == "10.9.9.9"
