"""``chutes-subnet localchain``: the dev chain gets subnets and registrations from a
command, not from code (issue 17, item 5), and the validator says why a round is empty."""

from __future__ import annotations

import asyncio

from chutes_subnet.chain import LocalChain, Metagraph, Neuron
from chutes_subnet.cli import main
from chutes_subnet.validator.neuron import explain_no_miners


def test_create_register_show_and_unknown_netuid(tmp_path, capsys):
    chain = f"local:{tmp_path / 'chain.sqlite'}"
    wallets = str(tmp_path / "wallets")
    assert main(["localchain", "create-subnet", "--chain", chain, "--netuid", "3",
                 "--block-time", "0", "--weights-rate-limit", "5"]) == 0
    assert main(["localchain", "register", "--chain", chain, "--netuid", "3",
                 "--wallet.name", "validator", "--wallet.path", wallets, "--create-wallet",
                 "--stake", "1000", "--validator-permit"]) == 0
    assert main(["localchain", "register", "--chain", chain, "--netuid", "3",
                 "--wallet.name", "miner", "--wallet.path", wallets, "--create-wallet"]) == 0
    out = capsys.readouterr().out
    assert "uid 0:" in out and "validator permit" in out and "uid 1:" in out
    graph = asyncio.run(LocalChain(str(tmp_path / "chain.sqlite"), netuid=3).metagraph())
    assert [(n.uid, n.validator_permit, n.stake) for n in graph.neurons] == \
        [(0, True, 1000.0), (1, False, 0.0)]
    assert main(["localchain", "show", "--chain", chain, "--netuid", "3"]) == 0
    assert "2 neurons" in capsys.readouterr().out

    code = main(["localchain", "register", "--chain", chain, "--netuid", "9",
                 "--wallet.name", "miner", "--wallet.path", wallets])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "subnet 9 does not exist" in err and "localchain create-subnet" in err


def test_register_without_a_wallet_names_the_fix(tmp_path, capsys):
    chain = f"local:{tmp_path / 'chain.sqlite'}"
    assert main(["localchain", "create-subnet", "--chain", chain]) == 0
    code = main(["localchain", "register", "--chain", chain, "--wallet.name", "nobody",
                 "--wallet.path", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "wallet 'nobody' not found" in err and "--wallet.name" in err


def _graph(*neurons: Neuron) -> Metagraph:
    return Metagraph(netuid=5, block=1, neurons=neurons)


def test_validator_explains_an_empty_round():
    me = Neuron(0, "me", "ck", True, 10.0, None)
    assert "not registered on netuid 5" in explain_no_miners(_graph(), "me")
    assert "no neuron besides this validator" in explain_no_miners(_graph(me), "me")
    other_validator = Neuron(1, "v2", "ck", True, 10.0, None)
    assert "validator-permit holders without an axon" in explain_no_miners(
        _graph(me, other_validator), "me")
