"""The dev PKI's PKCS#12 keystores as a Python client reads them (cryptography, a dependency of
the Symphony BDK), and a first authenticate with what the keystore holds, the way a PKCS#12
adapter for requests (requests-pkcs12) does it: the key and chain taken out of the keystore
into an ssl context.

    python scripts/p12_check.py --certs DIR [--port PORT] [--password changeit] [--name bot.user]

Checks, each printed PASS or FAIL (exit 1 on any FAIL):
- DIR/NAME.p12 loads with the password, and not with another: a key, the certificate whose CN
  is NAME (the same as DIR/NAME.pem), and the CA (the same as DIR/ca.pem) as the chain;
- DIR/truststore.p12 loads with the password: no key, exactly the CA certificate;
- with --port: POST /sessionauth/v1/authenticate on https://localhost:PORT with the keystore's
  key and certificate, trusting the truststore's CA, answers 200 with a sessionToken.
"""

import argparse
import json
import os
import ssl
import sys
import tempfile
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

failures = 0


def check(step, ok, detail=""):
    global failures
    if ok:
        print(f"PASS: {step}")
    else:
        failures += 1
        print(f"FAIL: {step}{': ' + detail if detail else ''}")


def pem_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--password", default="changeit")
    parser.add_argument("--name", default="bot.user")
    args = parser.parse_args()
    password = args.password.encode()
    keystore = os.path.join(args.certs, f"{args.name}.p12")
    with open(keystore, "rb") as f:
        data = f.read()
    ca = pem_cert(os.path.join(args.certs, "ca.pem"))

    try:
        pkcs12.load_key_and_certificates(data, b"not-the-password")
        check(f"{args.name}.p12 refuses a wrong password", False, "it loaded")
    except ValueError:
        check(f"{args.name}.p12 refuses a wrong password", True)

    key, cert, chain = pkcs12.load_key_and_certificates(data, password)
    check(f"{args.name}.p12 loads with its password and holds a key", key is not None)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value if cert else None
    check(f"{args.name}.p12's certificate has CN={args.name}", cn == args.name, f"CN={cn}")
    check(
        f"{args.name}.p12's certificate is {args.name}.pem",
        cert == pem_cert(os.path.join(args.certs, f"{args.name}.pem")),
    )
    check(f"{args.name}.p12's chain is the CA", chain == [ca], f"{len(chain)} certificate(s)")

    with open(os.path.join(args.certs, "truststore.p12"), "rb") as f:
        trust = pkcs12.load_pkcs12(f.read(), password)
    check("truststore.p12 loads with its password and holds no key", trust.key is None)
    certs = [c.certificate for c in trust.additional_certs] + ([trust.cert.certificate] if trust.cert else [])
    check("truststore.p12 holds exactly the CA", certs == [ca], f"{len(certs)} certificate(s)")

    if args.port:
        with tempfile.TemporaryDirectory() as tmp:
            cert_file = os.path.join(tmp, "client.pem")
            # The key leaves the keystore only into this private temporary folder.
            fd = os.open(cert_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(cert.public_bytes(serialization.Encoding.PEM))
                out.write(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
            ctx = ssl.create_default_context(cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs))
            ctx.load_cert_chain(cert_file)
            request = urllib.request.Request(
                f"https://localhost:{args.port}/sessionauth/v1/authenticate", method="POST", data=b""
            )
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:
                    body = json.load(resp)
                    ok = resp.status == 200 and body.get("name") == "sessionToken" and body.get("token")
                    check(f"{args.name} authenticates with its keystore (Python ssl)", bool(ok), f"HTTP {resp.status}")
            except Exception as e:  # noqa: BLE001 - any failure is a FAIL line
                check(f"{args.name} authenticates with its keystore (Python ssl)", False, repr(e))

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
