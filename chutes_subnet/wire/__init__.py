"""The wire contract: everything two roles must agree on, in one package.

* :mod:`.protocol` — versions, invokable paths, size limits, nonce lifetimes,
  chute ids, the bounded JSON parser for peer bytes;
* :mod:`.messages` — the JSON schemas of every endpoint (pydantic);
* :mod:`.headers` — every header name, :class:`~.headers.InvokeHeaders` and the one
  usage parser;
* :mod:`.call` — one sealed invoke as a caller (client, validator benchmark) makes
  it: seal the request, decode the answer.

A change to a header, a message or the envelope's use on the wire touches this
package (and :mod:`chutes_subnet.e2ee` for byte layouts), not the roles.
"""
