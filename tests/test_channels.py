"""Channel names and dial strings as Asterisk writes them."""

from __future__ import annotations

import pytest

from cti.calls.channels import dialed_number


@pytest.mark.parametrize(
    ("dial_string", "number"),
    [
        ("Local/0611111111@fake-pstn/n", "0611111111"),  # Local options after the last slash
        ("Local/+33611111111@cti-dialer-out/nj", "+33611111111"),
        ("0611111111@fake-pstn/n", "0611111111"),  # DialBegin's DialString: no technology
        ("0611111111@fake-pstn", "0611111111"),
        ("PJSIP/0611111111@trunk", "0611111111"),
        ("PJSIP/+33611111111@trunk", "+33611111111"),
        ("PJSIP/trunk/sip:0611111111@operator.example;user=phone", "0611111111"),
        ("trunk/sip:+33611111111@operator.example", "+33611111111"),
        ("SIP/trunk/0611111111", "0611111111"),  # chan_sip's peer/number (Asterisk 18)
        ("DAHDI/g1/0611111111", "0611111111"),
        ("PJSIP/1001", "1001"),  # a device names its resource
        ("", None),
        (None, None),
        ("/n", None),
    ],
)
def test_the_number_a_dial_string_calls(dial_string: str | None, number: str | None) -> None:
    assert dialed_number(dial_string) == number
