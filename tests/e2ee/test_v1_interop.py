"""v1 interoperability with the public Chutes client (chutes-e2ee 0.1.0), both directions.

The public client's own functions run in a separate venv (tests/interop.py); bytes
cross the process boundary as base64, exactly as they would cross the network.
"""

from __future__ import annotations

import base64

import pytest

from chutes_subnet.e2ee import KeyPair, v1
from tests.interop import run_client

pytestmark = pytest.mark.usefixtures("chutes_client_venv")

B64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
UNB64 = base64.b64decode

PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}], "max_tokens": 7}


def test_public_client_request_opened_and_answered_by_us():
    kp = KeyPair.generate()
    sealed = run_client(
        """
        import base64
        from chutes_e2ee.crypto import build_e2ee_request
        r = build_e2ee_request(DATA["pk"], DATA["payload"])
        RESULT = {"blob": base64.b64encode(r.blob).decode(), "sk": base64.b64encode(r.response_sk).decode()}
        """,
        {"pk": kp.public_b64, "payload": PAYLOAD},
    )
    payload, response_pk = v1.open_request(kp, UNB64(sealed["blob"]))
    assert payload == PAYLOAD
    assert len(response_pk) == 1184

    answer = {"id": "x", "choices": [{"message": {"content": "ünïcode"}}], "usage": {"total_tokens": 3}}
    sealer = v1.StreamSealer(response_pk)
    lines = ['data: {"a": 1}', 'data: {"b": "ß"}']
    opened = run_client(
        """
        import base64
        from chutes_e2ee.crypto import decrypt_response, decrypt_stream_init, decrypt_stream_chunk
        sk = base64.b64decode(DATA["sk"])
        resp = decrypt_response(base64.b64decode(DATA["resp"]), sk)
        key = decrypt_stream_init(sk, DATA["init"])
        RESULT = {"resp": resp, "lines": [decrypt_stream_chunk(c, key) for c in DATA["chunks"]]}
        """,
        {
            "sk": sealed["sk"],
            "resp": B64(v1.seal_response(response_pk, answer)),
            "init": sealer.init_event()["e2e_init"],
            "chunks": [sealer.seal_line(line)["e2e"] for line in lines],
        },
    )
    assert opened["resp"] == answer
    assert opened["lines"] == lines


def test_our_request_opened_and_answered_by_public_client_primitives():
    """Our client side against a v1 server built only from the public client's functions."""
    server = run_client(
        """
        import base64
        from pqcrypto.kem.ml_kem_768 import generate_keypair
        pk, sk = generate_keypair()
        RESULT = {"pk": base64.b64encode(pk).decode(), "sk": base64.b64encode(sk).decode()}
        """
    )
    blob, response_key = v1.seal_request(UNB64(server["pk"]), PAYLOAD)
    reply = run_client(
        """
        import base64, gzip, json, os
        from pqcrypto.kem.ml_kem_768 import decrypt, encrypt
        from chutes_e2ee.crypto import derive_key, chacha_decrypt, chacha_encrypt, INFO_REQ, INFO_RESP, INFO_STREAM
        blob = base64.b64decode(DATA["blob"]); sk = base64.b64decode(DATA["sk"])
        ct, nonce, body = blob[:1088], blob[1088:1100], blob[1100:]
        key = derive_key(decrypt(sk, ct), ct, INFO_REQ)
        payload = json.loads(gzip.decompress(chacha_decrypt(key, nonce, body[:-16], body[-16:])))
        rpk = base64.b64decode(payload.pop("e2e_response_pk"))
        rct, rss = encrypt(rpk)
        n = os.urandom(12)
        c, t = chacha_encrypt(derive_key(rss, rct, INFO_RESP), n, gzip.compress(json.dumps({"echo": payload}).encode()))
        sct, sss = encrypt(rpk)
        skey = derive_key(sss, sct, INFO_STREAM)
        chunks = []
        for line in ["data: one", "data: two"]:
            n2 = os.urandom(12)
            c2, t2 = chacha_encrypt(skey, n2, line.encode())
            chunks.append(base64.b64encode(n2 + c2 + t2).decode())
        RESULT = {"resp": base64.b64encode(rct + n + c + t).decode(), "init": base64.b64encode(sct).decode(), "chunks": chunks}
        """,
        {"blob": B64(blob), "sk": server["sk"]},
    )
    assert v1.open_response(response_key, UNB64(reply["resp"])) == {"echo": PAYLOAD}
    opener = v1.StreamOpener(response_key)
    opener.open_init(reply["init"])
    assert [opener.open_line(c) for c in reply["chunks"]] == ["data: one", "data: two"]
