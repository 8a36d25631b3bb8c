#!/usr/bin/env bash
# Run chutes-subnet end to end on a local subtensor devnet (needs Docker).
#
#   scripts/localnet.sh up        start the chain, create + fund wallets, create and start
#                                 the subnet, register + stake, start miner and validator
#   scripts/localnet.sh chain     the same, without starting the neurons
#   scripts/localnet.sh status    metagraph and weights of the subnet
#   scripts/localnet.sh down      stop the neurons this script started and the chain
#
# Settings (environment): BT_CHAIN_ENDPOINT, SUBTENSOR_IMAGE, SUBTENSOR_CONTAINER,
# LOCALNET_DIR, WALLET_PATH, NETUID (reuse an existing subnet), MINER_PORT,
# FUND_TAO, VALIDATOR_STAKE_TAO, FAST_BLOCKS (True/False), PYTHON.
# See docs/localnet.md for what each step does and for troubleshooting.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENDPOINT="${BT_CHAIN_ENDPOINT:-ws://127.0.0.1:9944}"
IMAGE="${SUBTENSOR_IMAGE:-ghcr.io/opentensor/subtensor-localnet:devnet}"
CONTAINER="${SUBTENSOR_CONTAINER:-chutes-subtensor-localnet}"
STATE_DIR="${LOCALNET_DIR:-$REPO_ROOT/.localnet}"
WALLET_PATH="${WALLET_PATH:-$STATE_DIR/wallets}"
MINER_PORT="${MINER_PORT:-8091}"
FUND_TAO="${FUND_TAO:-5000}"
VALIDATOR_STAKE_TAO="${VALIDATOR_STAKE_TAO:-1000}"
FAST_BLOCKS="${FAST_BLOCKS:-True}"
PYTHON="${PYTHON:-python3}"
CHAIN_WAIT_SECONDS="${CHAIN_WAIT_SECONDS:-120}"
WEIGHTS_WAIT_SECONDS="${WEIGHTS_WAIT_SECONDS:-900}"
# Public, well-known secret seed of the Substrate development account //Alice
# (endowed and sudo on every dev chain; worthless anywhere else).
ALICE_SEED="0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a"

# Flags every btcli call gets: the devnet endpoint, only that endpoint, our wallets,
# and no interactive confirmation.
BT_NET=(--network "$ENDPOINT" --fallback-endpoints none --archive-endpoints none)
BT_TX=("${BT_NET[@]}" --wallet-path "$WALLET_PATH" --no-prompt)

log() { printf '\033[1;34m[localnet]\033[0m %s\n' "$*"; }
warn() { printf '\033[1;33m[localnet] warning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[localnet] error:\033[0m %s\n' "$*" >&2; exit 1; }

require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: $2"
}

check_tools() {
  require docker "install Docker (https://docs.docker.com/get-docker/)"
  require btcli "pip install 'bittensor==11.3.0', which provides the btcli command"
  require "$PYTHON" "set PYTHON to a Python 3.11+ with chutes-subnet installed"
  "$PYTHON" -c "import chutes_subnet" 2>/dev/null \
    || die "chutes_subnet is not importable by $PYTHON: run 'pip install -e .' in $REPO_ROOT"
}

start_chain() {
  if [ -n "$(docker ps -q --filter "name=^${CONTAINER}$")" ]; then
    log "chain container $CONTAINER already running"
  else
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    log "starting $IMAGE (fast blocks: $FAST_BLOCKS)"
    docker run -d --name "$CONTAINER" -p 9944:9944 -p 9945:9945 "$IMAGE" "$FAST_BLOCKS" >/dev/null
  fi
  log "waiting for $ENDPOINT (up to ${CHAIN_WAIT_SECONDS}s)"
  local deadline=$((SECONDS + CHAIN_WAIT_SECONDS))
  until btcli subnets list "${BT_NET[@]}" --json >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "chain did not answer at $ENDPOINT; see: docker logs $CONTAINER"
    sleep 2
  done
  log "chain is up"
}

# address NAME FIELD -> coldkey (2) or hotkey (3) ss58 of a dev wallet
address() {
  awk -v n="$1" -v f="$2" '$1 == n { print $f }' "$STATE_DIR/addresses"
}

create_wallets() {
  mkdir -p "$WALLET_PATH"
  if [ ! -f "$WALLET_PATH/alice/coldkey" ]; then
    log "importing the //Alice development account as wallet 'alice'"
    btcli wallet regen-coldkey --wallet alice --wallet-path "$WALLET_PATH" \
      --seed "$ALICE_SEED" --no-password --quiet >/dev/null
  fi
  log "creating owner/validator/miner development wallets in $WALLET_PATH (unencrypted)"
  "$PYTHON" "$REPO_ROOT/scripts/localnet/dev_wallets.py" "$WALLET_PATH" owner validator miner \
    > "$STATE_DIR/addresses"
  cat "$STATE_DIR/addresses"
}

fund_wallets() {
  local name
  for name in owner validator miner; do
    log "funding $name with $FUND_TAO TAO from //Alice"
    btcli tx transfer "${BT_TX[@]}" --wallet alice \
      --dest "$(address "$name" 2)" --amount-tao "$FUND_TAO"
  done
}

create_subnet() {
  if [ -n "${NETUID:-}" ]; then
    log "reusing subnet $NETUID"
    return
  fi
  log "registering a new subnet owned by 'owner'"
  btcli tx register-subnet "${BT_TX[@]}" --wallet owner --wallet-hotkey default --json \
    > "$STATE_DIR/register-subnet.json"
  NETUID="$("$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["data"]["netuid"])' \
    < "$STATE_DIR/register-subnet.json")" \
    || die "could not read the new netuid from $STATE_DIR/register-subnet.json"
  echo "$NETUID" > "$STATE_DIR/netuid"
  log "subnet $NETUID registered"

  log "starting emissions on subnet $NETUID (start-call)"
  local attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if btcli tx start-call "${BT_TX[@]}" --wallet owner --netuid "$NETUID"; then
      break
    fi
    [ "$attempt" -lt 10 ] || die "start-call kept failing (see the message above)"
    warn "start-call refused (attempt $attempt); the chain may require a few blocks first"
    sleep 15
  done
  # Weights become visible immediately without commit-reveal; optional on a devnet.
  btcli tx set-hyperparameter "${BT_TX[@]}" --wallet owner --netuid "$NETUID" \
    --name commit_reveal_weights_enabled --value false \
    || warn "could not disable commit-reveal; weights will show after the reveal period"
}

register_neurons() {
  local name
  for name in validator miner; do
    log "burned-register $name on subnet $NETUID"
    btcli tx burned-register "${BT_TX[@]}" --wallet "$name" --wallet-hotkey default \
      --netuid "$NETUID"
  done
  log "staking $VALIDATOR_STAKE_TAO TAO to the validator hotkey"
  btcli tx add-stake "${BT_TX[@]}" --wallet validator --wallet-hotkey default \
    --netuid "$NETUID" --hotkey "$(address validator 3)" --amount-tao "$VALIDATOR_STAKE_TAO" \
    --no-slippage-protection --no-mev-shield
}

start_neurons() {
  local common=(--netuid "$NETUID" --wallet.path "$WALLET_PATH" --wallet.hotkey default
    --subtensor.network local --subtensor.chain_endpoint "$ENDPOINT")
  # The miner binds and publishes 127.0.0.1 (a devnet is local); the simulated TEE is
  # accepted on a loopback endpoint. The validator's --dev accepts simulated evidence.
  log "starting the miner on 127.0.0.1:$MINER_PORT (simulated TEE: development only)"
  (cd "$REPO_ROOT" && exec "$PYTHON" neurons/miner.py "${common[@]}" --wallet.name miner \
    --axon.ip 127.0.0.1 --axon.port "$MINER_PORT" --tee simulated) \
    > "$STATE_DIR/miner.log" 2>&1 &
  echo $! > "$STATE_DIR/miner.pid"
  log "starting the validator"
  (cd "$REPO_ROOT" && CHUTES_SUBNET_HOME="$STATE_DIR/validator" exec "$PYTHON" \
    neurons/validator.py "${common[@]}" --wallet.name validator --dev \
    --neuron.wait_for_permit "$WEIGHTS_WAIT_SECONDS") \
    > "$STATE_DIR/validator.log" 2>&1 &
  echo $! > "$STATE_DIR/validator.pid"
  log "logs: $STATE_DIR/miner.log, $STATE_DIR/validator.log"
}

show_status() {
  NETUID="${NETUID:-$(cat "$STATE_DIR/netuid" 2>/dev/null || true)}"
  [ -n "$NETUID" ] || die "no subnet yet: run '$0 up' (or set NETUID)"
  btcli subnets metagraph "$NETUID" "${BT_NET[@]}"
  btcli query weights "${BT_NET[@]}" --netuid "$NETUID"
}

wait_for_weights() {
  log "waiting up to ${WEIGHTS_WAIT_SECONDS}s for the validator's weights (permits are granted at the first epoch)"
  local deadline=$((SECONDS + WEIGHTS_WAIT_SECONDS)) out
  while [ "$SECONDS" -lt "$deadline" ]; do
    out="$(btcli query weights "${BT_NET[@]}" --netuid "$NETUID" --json 2>/dev/null || true)"
    if [ -n "$out" ] && [ "$out" != "{}" ] && [ "$out" != "null" ]; then
      log "weights are on chain:"
      echo "$out"
      return 0
    fi
    sleep 10
  done
  warn "no weights yet; check $STATE_DIR/validator.log and run '$0 status' later"
}

stop_all() {
  local role pid
  for role in miner validator; do
    if [ -f "$STATE_DIR/$role.pid" ]; then
      pid="$(cat "$STATE_DIR/$role.pid")"
      if kill -0 "$pid" 2>/dev/null; then
        log "stopping $role (pid $pid)"
        kill "$pid" || true
      fi
      rm -f "$STATE_DIR/$role.pid"
    fi
  done
  if docker ps -aq --filter "name=^${CONTAINER}$" | grep -q .; then
    log "removing chain container $CONTAINER"
    docker rm -f "$CONTAINER" >/dev/null
  fi
}

main() {
  local command="${1:-up}"
  mkdir -p "$STATE_DIR"
  case "$command" in
    up | chain)
      check_tools
      start_chain
      create_wallets
      fund_wallets
      create_subnet
      register_neurons
      if [ "$command" = up ]; then
        start_neurons
        sleep 5
        btcli subnets metagraph "$NETUID" "${BT_NET[@]}"
        wait_for_weights
      fi
      log "subnet $NETUID ready at $ENDPOINT; BT_CHAIN_ENDPOINT=$ENDPOINT pytest -m localnet"
      ;;
    status) show_status ;;
    down) stop_all ;;
    *) die "unknown command '$command' (use: up | chain | status | down)" ;;
  esac
}

main "$@"
