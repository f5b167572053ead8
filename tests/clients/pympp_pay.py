#!/usr/bin/env python3
"""Pays for one HTTP request with pympp, the Python MPP client SDK, unchanged.

    pympp_pay.py URL --key 0x... --rpc http://127.0.0.1:8545 [--mode pull|push|sign]

pull (pympp's default): `mpp.client.Mpp` gets the 402, signs a Tempo
transaction for the `Payment` challenge and retries with it; the server
broadcasts it. push: pympp 0.16 has no push client, so this script does what
a push client does: it asks pympp to sign the same transaction, broadcasts it
itself, waits for its receipt and retries with `{"type": "hash"}`. sign:
gets the 402 and prints the pull credential pympp builds for it, without
sending it (for tests that present one signed transaction several times).

Prints one JSON line: the final status, the `Payment-Receipt` header as
pympp's `Receipt.from_payment_receipt` parsed it (or the parse error), the
response body, and the transaction hash in push mode. Exits 0 whenever it
got a final answer; the caller judges it.
"""

import argparse
import asyncio
import json
import sys
import time

import httpx
from mpp import Challenge, Credential, Receipt
from mpp.client import Mpp
from mpp.methods.tempo import TempoAccount
from mpp.methods.tempo import client as tempo
from mpp.runtime import CredentialParams


def method(args):
    return tempo.charge(
        account=TempoAccount.from_key(args.key),
        chain_id=args.chain_id,
        rpc_url=args.rpc,
    )


async def pull(args):
    async with Mpp(methods=[method(args)]) as mpp:
        return await mpp.fetch(args.url, method=args.method, timeout=40), None


async def rpc(client, url, name, params):
    r = await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": name, "params": params})
    body = r.json()
    if "error" in body:
        raise RuntimeError(f"{name}: {body['error']}")
    return body["result"]


async def sign(args, http):
    """The 402's Payment challenge, and pympp's pull credential for it."""
    first = await http.request(args.method, args.url)
    if first.status_code != 402:
        raise RuntimeError(f"expected a 402, got {first.status_code}: {first.text}")
    offers = [
        Challenge.from_www_authenticate(h)
        for h in first.headers.get_list("www-authenticate")
        if h.lower().startswith("payment ")
    ]
    if not offers:
        raise RuntimeError(f"402 without a Payment challenge: {first.headers}")
    return Credential.from_authorization(
        await method(args).create_credential(CredentialParams(challenge=offers[0]))
    )


async def push(args):
    async with httpx.AsyncClient(timeout=40) as http:
        signed = await sign(args, http)
        tx_hash = await rpc(http, args.rpc, "eth_sendRawTransaction", [signed.payload["signature"]])
        deadline = time.monotonic() + 30
        while await rpc(http, args.rpc, "eth_getTransactionReceipt", [tx_hash]) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tx_hash} was not mined")
            await asyncio.sleep(0.2)
        paid = Credential(
            challenge=signed.challenge,
            payload={"type": "hash", "hash": tx_hash},
            source=signed.source,
        )
        retry = await http.request(
            args.method, args.url, headers={"Authorization": paid.to_authorization()}
        )
        return retry, tx_hash


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--key", required=True, help="payer's private key, 0x-prefixed")
    p.add_argument("--rpc", required=True, help="Tempo JSON-RPC endpoint")
    p.add_argument("--chain-id", type=int, default=42431)
    p.add_argument("--mode", choices=["pull", "push", "sign"], default="pull")
    p.add_argument("--method", default="GET")
    args = p.parse_args()

    if args.mode == "sign":
        async with httpx.AsyncClient(timeout=40) as http:
            signed = await sign(args, http)
        print(json.dumps({"client": "pympp", "mode": "sign", "authorization": signed.to_authorization()}))
        return
    response, tx_hash = await (pull if args.mode == "pull" else push)(args)
    out = {"client": "pympp", "mode": args.mode, "status": response.status_code, "tx_hash": tx_hash}
    header = response.headers.get("payment-receipt")
    if header is not None:
        try:
            r = Receipt.from_payment_receipt(header)
            out["receipt"] = {
                "status": r.status,
                "method": r.method,
                "reference": r.reference,
                "timestamp": r.timestamp.isoformat(),
            }
        except Exception as e:  # the point: does the SDK accept it?
            out["receipt_error"] = repr(e)
    try:
        out["body"] = response.json()
    except ValueError:
        out["body"] = response.text
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:
        print(json.dumps({"client": "pympp", "error": repr(e)}))
        sys.exit(1)
