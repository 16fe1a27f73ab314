#!/usr/bin/env bash
# deploy/kafka.sh: run a real Apache Kafka broker (KRaft, no ZooKeeper, no
# Docker) from plain jars fetched from Maven Central, for tests and local dev.
#
#   deploy/kafka.sh fetch
#       Fetch the Kafka jars into <repo>/.cache/kafka/<version>/libs (idempotent).
#
#   deploy/kafka.sh start --data DIR --port N --controller-port M
#                         [--node-id ID] [--fresh] [--timeout SECONDS]
#                         [--extra key=value [key=value...]]...
#       Start one combined broker+controller node: clients on 127.0.0.1:N,
#       controller quorum on 127.0.0.1:M. --fresh stops any node in DIR and
#       wipes DIR first. Storage is formatted only when DIR/logs/meta.properties
#       is missing, so data survives stop/start. DIR/server.properties is
#       rewritten on every start (so --extra may change between restarts);
#       --extra lines are appended and so override the defaults.
#       Without --port/--controller-port, an existing DIR/server.properties is
#       reused as is (this is also how one node of a cluster is restarted).
#       Waits until the broker answers a Metadata request (default 90s).
#       Files in DIR: server.properties, kafka.pid, kafka.out (stdout/stderr),
#       server.log (log4j, INFO), kafka.bootstrap (host:port), logs/ (data).
#
#   deploy/kafka.sh start --sasl-ssl [--users "NAME..."] [--oauth-jwks FILE [--oauth-audience A]]
#                         --data DIR --port N ...
#       The same node, secured: clients connect to 127.0.0.1:N over SASL_SSL
#       (SCRAM-SHA-512 or -256) and the StandardAuthorizer denies whatever no
#       ACL allows (super user: admin). On first start, openssl makes a CA
#       and a broker certificate (SAN 127.0.0.1, localhost) in DIR/tls/
#       (clients trust DIR/tls/ca.pem), and a random password for admin and
#       for each of --users in DIR/secrets/NAME.password (mode 600); the
#       SCRAM users are created when the storage is formatted. The brokers
#       talk to each other over SASL_SSL as admin, and to the controller
#       listener (127.0.0.1:M) with SASL/PLAIN as "controller". Tools run
#       as admin with `tool CLASS ... --command-config DIR/admin.properties`.
#       Readiness is the broker's "started" log line (no raw Metadata probe).
#       --oauth-jwks FILE (an absolute path) also enables SASL/OAUTHBEARER on
#       that listener: Kafka's own validator (OAuthBearerValidatorCallbackHandler)
#       checks each token's signature against the JWKS in FILE, its exp, and
#       its aud against --oauth-audience (default profiles-kafka); the
#       principal is the token's sub. The broker JVM is allowed to read
#       exactly that file (Kafka 4 refuses OAuth URLs and files it was not
#       told to allow).
#
#   deploy/kafka.sh stop --data DIR
#       SIGTERM, wait up to 30s for a controlled shutdown, then SIGKILL.
#
#   deploy/kafka.sh status --data DIR
#       Print "running ..." (exit 0) or "stopped" (exit 1).
#
#   deploy/kafka.sh tool CLASS [ARGS...]
#       Run a Kafka command-line class with the fetched jars and quiet logging,
#       e.g. org.apache.kafka.tools.TopicCommand, ProducerPerformance,
#       ConsumerPerformance, GetOffsetShell (all in org.apache.kafka.tools),
#       org.apache.kafka.tools.consumer.group.ConsumerGroupCommand.
#
#   deploy/kafka.sh start-cluster --data DIR --base-port N [--fresh] [--gids]
#                                 [--timeout SECONDS] [--extra key=value]...
#       Three static voters, node ids 1..3, data in DIR/node1..3, brokers on
#       127.0.0.1:N..N+2, controllers on 127.0.0.1:N+10..N+12. Defaults to
#       replication factor 3 and min.insync.replicas 2. Nodes already running
#       are left alone, so after `stop --data DIR/node2` the same
#       start-cluster command brings node 2 back. --gids (as root): node i
#       runs under group id 200000 + its broker port (DIR/nodeI/kafka.gid,
#       kept for later starts), for network partitions by nftables.
#
#   deploy/kafka.sh stop-cluster --data DIR
#       Stop all three nodes at once (controlled shutdown, then SIGKILL).
#
# Environment: KAFKA_VERSION (default 4.1.1), JAVA_HOME or JAVA,
# KAFKA_MVN_ARGS (extra Maven arguments for fetch, e.g. -o or
# -Dmaven.repo.local=DIR), KAFKA_HEAP_OPTS (default "-Xms256m -Xmx512m"), KAFKA_JVM_OPTS (extra broker
# JVM flags), KAFKA_TOOL_HEAP_OPTS (default "-Xmx512m"), KAFKA_START_TIMEOUT.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
CACHE_DIR=$REPO_ROOT/.cache/kafka/$KAFKA_VERSION
LIBS=$CACHE_DIR/libs
MARKER=$CACHE_DIR/.complete
POM=$SCRIPT_DIR/kafka/pom.xml
BROKER_LOG4J=$SCRIPT_DIR/kafka/log4j2.properties
TOOLS_LOG4J=$SCRIPT_DIR/kafka/log4j2-tools.properties
if [[ -n ${JAVA:-} ]]; then
  :
elif [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
  JAVA=$JAVA_HOME/bin/java
else
  JAVA=java
fi
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
TOOL_HEAP_OPTS=${KAFKA_TOOL_HEAP_OPTS:--Xmx512m}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=30

# shellcheck source=deploy/lib.sh
source "$SCRIPT_DIR/lib.sh"

need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH ($2)"; }

# ---------------------------------------------------------------- fetch

# The marker records what was fetched; a changed pom or version refetches.
fetch_stamp() { printf '%s %s\n' "$KAFKA_VERSION" "$(sha256sum "$POM" | cut -d' ' -f1)"; }
fetched() { [[ -f $MARKER && "$(cat "$MARKER")" == "$(fetch_stamp)" ]]; }

fetch() {
  fetched && return 0
  need_cmd "$JAVA" "Kafka needs Java 17 or newer"
  need_cmd mvn "Maven fetches the Kafka jars from Maven Central"
  mkdir -p "$CACHE_DIR"
  # The lock lives on fd 9 of a subshell only, so no broker inherits it.
  (
    flock 9
    fetched && exit 0
    log "fetching Apache Kafka $KAFKA_VERSION jars with Maven into ${LIBS#"$REPO_ROOT"/} ..."
    local t0 tmp
    t0=$(now_ms)
    tmp=$CACHE_DIR/libs.tmp.$$
    rm -rf "$tmp"
    # Maven's output (only errors, with -q) is shown only when it fails.
    # shellcheck disable=SC2086 # KAFKA_MVN_ARGS is a word list on purpose
    if ! mvn -q -B -Dstyle.color=never ${KAFKA_MVN_ARGS:-} -f "$POM" \
        -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$tmp" >"$CACHE_DIR/mvn.log" 2>&1; then
      cat "$CACHE_DIR/mvn.log" >&2
      rm -rf "$tmp"
      die "mvn could not fetch Kafka $KAFKA_VERSION (Maven output above, also in $CACHE_DIR/mvn.log)"
    fi
    for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" \
        "kafka-clients-$KAFKA_VERSION.jar"; do
      [[ -f $tmp/$jar ]] || { rm -rf "$tmp"; die "fetch incomplete: $jar missing"; }
    done
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    fetch_stamp >"$MARKER"
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars in $(( $(now_ms) - t0 )) ms"
  ) 9>"$CACHE_DIR/.lock"
}

# ---------------------------------------------------------------- helpers

run_tool() { # CLASS ARGS... (runs in the foreground)
  # shellcheck disable=SC2086 # heap opts are a word list on purpose
  "$JAVA" $TOOL_HEAP_OPTS \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    -cp "$LIBS/*" "$@"
}

# Prints the PID of a live Kafka node for DATA_DIR, or fails.
live_pid() {
  local dir=$1 pid
  [[ -f $dir/kafka.pid ]] || return 1
  pid=$(cat "$dir/kafka.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled PID: it must be our broker for this directory.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $dir/server.properties" || return 1
  echo "$pid"
}

# Send a Kafka Metadata v4 request (all topics) straight over TCP and check
# the answer carries our correlation id and at least one broker. Kafka
# enables request processing only once the broker is fully started (and
# unfenced), so an answer means clients can work. Far cheaper than a JVM tool.
metadata_ok() {
  local port=$1 out
  # shellcheck disable=SC2016 # expanded by the inner shell
  out=$(timeout 3 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      # size=23 | api_key=3 (Metadata) | version=4 | correlation_id=1 |
      # client_id="kafka.sh" | topics=null (all) | allow_auto_topic_creation=false
      printf "\x00\x00\x00\x17\x00\x03\x00\x04\x00\x00\x00\x01\x00\x08kafka.sh\xff\xff\xff\xff\x00" >&3
      head -c 16 <&3 | od -An -tu1 -v' _ "$port" 2>/dev/null) || return 1
  local -a b
  read -r -a b <<<"$out"
  [[ ${#b[@]} -eq 16 ]] || return 1
  # bytes 4..7: correlation id; 8..11: throttle; 12..15: broker count
  [[ "${b[4]} ${b[5]} ${b[6]} ${b[7]}" == "0 0 0 1" ]] || return 1
  (( b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] >= 1 ))
}

show_logs() {
  local dir=$1
  log "----- tail of $dir/kafka.out -----"
  tail -n 30 "$dir/kafka.out" >&2 2>/dev/null || true
  log "----- tail of $dir/server.log -----"
  tail -n 60 "$dir/server.log" >&2 2>/dev/null || true
}

random_cluster_id() {
  # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding; Kafka
  # itself never hands out one starting with '-', so neither do we.
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || { echo "$id"; return; }
  done
}

# write_props DIR NODE_ID PORT CONTROLLER_PORT VOTERS DEFAULTS_KIND EXTRA...
# DEFAULTS_KIND: single, cluster, or secure (one node, SASL_SSL; see secure_props).
write_props() {
  local dir=$1 id=$2 port=$3 cport=$4 voters=$5 kind=$6
  shift 6
  local rf=1 isr=1
  [[ $kind == cluster ]] && rf=3 isr=2
  {
    echo "# Written by deploy/kafka.sh on every start; edits are lost."
    echo "process.roles=broker,controller"
    echo "node.id=$id"
    echo "controller.quorum.voters=$voters"
    if [[ $kind == secure ]]; then
      secure_props "$dir" "$port" "$cport"
    else
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "inter.broker.listener.name=PLAINTEXT"
    fi
    echo "controller.listener.names=CONTROLLER"
    echo "log.dirs=$dir/logs"
    echo "num.partitions=1"
    echo "auto.create.topics.enable=false"
    echo "default.replication.factor=$rf"
    echo "min.insync.replicas=$isr"
    echo "offsets.topic.replication.factor=$rf"
    echo "transaction.state.log.replication.factor=$rf"
    echo "transaction.state.log.min.isr=$isr"
    echo "share.coordinator.state.topic.replication.factor=$rf"
    echo "share.coordinator.state.topic.min.isr=$isr"
    echo "group.initial.rebalance.delay.ms=0"
    echo "log.cleaner.dedupe.buffer.size=4194304"
    # command-svc's writes are fenced by the group generation (KIP-447): a
    # transaction left open by a frozen instance holds its partitions'
    # readers back until the coordinator aborts it, at the producer's
    # transaction timeout (TXN_TIMEOUT) plus at most this check interval
    # (10 s by default).
    echo "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000"
    if [[ $kind == cluster ]]; then
      # A broker that stops heartbeating (killed, frozen, cut off from the
      # quorum) keeps leading its partitions until the active controller
      # fences it: writes to them fail meanwhile. Kafka's 9 s and 2 s would
      # set the floor of every broker fault; 4 s and 1 s keep four
      # heartbeats per session, so one late heartbeat on a loaded machine
      # does not fence a live broker (see docs/faults.md).
      echo "broker.session.timeout.ms=4000"
      echo "broker.heartbeat.interval.ms=1000"
      # A broker that is also the active controller is fenced only once the
      # other controllers have elected a new one (no fetch from the leader
      # for controller.quorum.fetch.timeout.ms, then a vote, and a random
      # backoff after a split one) and the new one has waited a whole
      # broker session for it: 8 s after a freeze with Kafka's 2 s, 1 s and
      # 1 s (docs/faults.md). Half of each still gives a live leader twice
      # the 500 ms for which it may hold a follower's fetch before the
      # others vote.
      echo "controller.quorum.fetch.timeout.ms=1000"
      echo "controller.quorum.election.timeout.ms=500"
      echo "controller.quorum.election.backoff.max.ms=500"
      # A leader cut off from the controller quorum does not know it was
      # deposed: it holds what it is asked to replicate (transaction
      # markers, transaction-log and produce appends) until this timeout,
      # and the coordinator's marker sender waits as long before it sends
      # the markers to the new leader. Every transaction of a producer
      # waits for its previous one's markers, so Kafka's 30 s held every
      # writer that had touched such a partition until the cut healed.
      echo "request.timeout.ms=5000"
    fi
    if (( $# > 0 )); then
      echo "# --extra"
      printf '%s\n' "$@"
    fi
  } >"$dir/server.properties.tmp"
  # A secure node's properties hold its passwords.
  [[ $kind == secure ]] && chmod 600 "$dir/server.properties.tmp"
  mv "$dir/server.properties.tmp" "$dir/server.properties"
  echo "127.0.0.1:$port" >"$dir/kafka.bootstrap"
}

# ---------------------------------------------------------------- SASL_SSL

random_secret() { head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

# make_tls DIR: a CA and a broker certificate for 127.0.0.1/localhost in
# DIR/tls (kept across restarts), and the broker's PKCS12 key store.
make_tls() {
  local tls=$1/tls
  [[ -f $tls/broker.p12 && -f $tls/ca.pem && -f $tls/keystore.password ]] && return 0
  need_cmd openssl "the SASL_SSL broker's certificates are made with openssl"
  mkdir -p "$tls"
  chmod 700 "$tls"
  local out
  if ! out=$(
    set -e
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=profiles test CA" \
      -keyout ca.key -out ca.pem \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile broker.ext -out broker.pem 2>&1
    random_secret >keystore.password
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout file:keystore.password -out broker.p12 2>&1
    rm -f broker.csr broker.ext ca.srl
  ); then
    printf '%s\n' "$out" >&2
    die "making the broker's certificates in $tls failed"
  fi
  log "made a CA and a broker certificate in $tls"
}

# make_secrets DIR USER...: a random password per user (and admin,
# controller) in DIR/secrets/NAME.password, kept across restarts.
make_secrets() {
  local dir=$1 u
  shift
  mkdir -p "$dir/secrets"
  chmod 700 "$dir/secrets"
  for u in admin controller "$@"; do
    [[ $u =~ ^[A-Za-z0-9._-]+$ ]] || die "user name '$u' must be letters, digits, '.', '_' or '-'"
    [[ -s $dir/secrets/$u.password ]] || (umask 077 && random_secret >"$dir/secrets/$u.password")
  done
}

secret() { cat "$1/secrets/$2.password"; }

# secure_props DIR PORT CONTROLLER_PORT: the listener lines of a secure node.
secure_props() {
  local dir=$1 port=$2 cport=$3 admin controller
  admin=$(secret "$dir" admin)
  controller=$(secret "$dir" controller)
  echo "listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  echo "advertised.listeners=SASL_SSL://127.0.0.1:$port"
  echo "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT"
  echo "inter.broker.listener.name=SASL_SSL"
  if [[ -n $OAUTH_JWKS ]]; then
    echo "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,OAUTHBEARER"
    # Clients' tokens are checked by Kafka's own JWT validator against the
    # JWKS file; the broker itself never logs in with OAUTHBEARER (its
    # login entry has no options, so it holds no token), as it talks to
    # the other brokers with SCRAM.
    echo "listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
    echo "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
    echo "sasl.oauthbearer.jwks.endpoint.url=file://$OAUTH_JWKS"
    # Kafka 4.1's default validator class (DefaultJwtValidator), made by
    # the callback handler without a key resolver, falls back to
    # ClientJwtValidator, which checks neither the signature nor the
    # audience. BrokerJwtValidator builds its resolver from the JWKS URL.
    echo "sasl.oauthbearer.jwt.validator.class=org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator"
    echo "sasl.oauthbearer.expected.audience=$OAUTH_AUDIENCE"
  else
    echo "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256"
  fi
  echo "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512"
  # Every mechanism of a listener needs a login entry (the broker's own, as
  # a client of the other brokers; the users' credentials are in metadata).
  echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";"
  echo "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";"
  # KRaft controllers cannot use SCRAM (its credentials live in the
  # metadata they serve): the controller listener takes SASL/PLAIN with
  # one static user, on loopback.
  echo "sasl.mechanism.controller.protocol=PLAIN"
  echo "listener.name.controller.sasl.enabled.mechanisms=PLAIN"
  echo "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"controller\" password=\"$controller\" user_controller=\"$controller\";"
  echo "ssl.keystore.type=PKCS12"
  echo "ssl.keystore.location=$dir/tls/broker.p12"
  echo "ssl.keystore.password=$(cat "$dir/tls/keystore.password")"
  echo "ssl.key.password=$(cat "$dir/tls/keystore.password")"
  echo "ssl.truststore.type=PEM"
  echo "ssl.truststore.location=$dir/tls/ca.pem"
  echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
  echo "super.users=User:admin;User:controller"
  echo "allow.everyone.if.no.acl.found=false"
}

# admin_props DIR: client settings for Kafka's tools, as admin.
admin_props() {
  local dir=$1
  {
    echo "security.protocol=SASL_SSL"
    echo "sasl.mechanism=SCRAM-SHA-512"
    echo "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$(secret "$dir" admin)\";"
    echo "ssl.truststore.type=PEM"
    echo "ssl.truststore.location=$dir/tls/ca.pem"
  } >"$dir/admin.properties"
  chmod 600 "$dir/admin.properties"
}

prop() { # FILE KEY -> last value of KEY
  sed -n "s/^$2=//p" "$1" | tail -n 1
}

format_storage() { # DIR CLUSTER_ID [StorageTool ARGS...]
  local dir=$1 cid=$2 out
  shift 2
  if ! out=$(run_tool kafka.tools.StorageTool format --cluster-id "$cid" \
      --config "$dir/server.properties" "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    die "formatting KRaft storage in $dir/logs failed"
  fi
}

gid_cgroup() { # GID -> the directory of the cgroup profiles-gid-GID, made
  # right under the cgroup v2 root, or nothing where there is none that
  # root can write. A socket stays matched by its cgroup after its process
  # has closed it, which a match by group id does not (see
  # deploy/e2e/netcut_test.go, which names the cgroups the same way).
  local root
  root=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") break }
    $(i + 1) == "cgroup2" && $4 == "/" { print $5; exit }' /proc/self/mountinfo 2>/dev/null) || true
  [[ -n $root ]] || return 0
  mkdir -p "$root/profiles-gid-$1" 2>/dev/null && echo "$root/profiles-gid-$1"
  return 0
}

launch() { # DIR: start the JVM in the background, write kafka.pid
  local dir=$1
  rm -f "$dir/kafka.pid"
  stat -c %s "$dir/server.log" >"$dir/.log-start" 2>/dev/null || echo 0 >"$dir/.log-start"
  # setsid: the broker outlives this script and ignores the caller's Ctrl-C.
  # The inner shell writes its own PID and then execs java, keeping that PID.
  # shellcheck disable=SC2016,SC2086
  # Under root, a node given a group id of its own (start-cluster --gids:
  # DIR/kafka.gid) runs under it, and in a cgroup named after it where the
  # machine has a cgroup v2 hierarchy (gid_cgroup), so that nftables rules
  # can cut it off by them (deploy/e2e/netcut_test.go); root's permissions
  # do not depend on either.
  local -a as=() oauth=()
  local cg=
  # Kafka 4 reads an OAuth JWKS only from URLs and files the JVM allows.
  local jwks
  jwks=$(prop "$dir/server.properties" sasl.oauthbearer.jwks.endpoint.url)
  if [[ -n $jwks ]]; then
    oauth=(-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls="$jwks")
    [[ $jwks == file://* ]] && oauth+=(-Dorg.apache.kafka.sasl.oauthbearer.allowed.files="${jwks#file://}")
  fi
  if [[ -s $dir/kafka.gid && $(id -u) == 0 ]]; then
    as=(setpriv --regid "$(cat "$dir/kafka.gid")" --clear-groups)
    cg=$(gid_cgroup "$(cat "$dir/kafka.gid")")
  fi
  setsid bash -c 'echo $$ >"$1/kafka.pid"; [[ -z $2 ]] || echo $$ >"$2/cgroup.procs"; shift 2; exec "$@"' _ "$dir" "$cg" \
    ${as[@]+"${as[@]}"} "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true ${oauth[@]+"${oauth[@]}"} ${KAFKA_JVM_OPTS:-} \
    -Dkafka.logs.dir="$dir" -Dlog4j2.configurationFile="$BROKER_LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/kafka.out" 2>&1 </dev/null 8>&- &
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $dir/kafka.pid ]] && return 0
    sleep 0.05
  done
  die "broker process in $dir did not start"
}

wait_ready() { # DIR PORT DEADLINE_MS -> 0 when ready; on failure print logs
  local dir=$1 port=$2 deadline=$3 pid
  pid=$(cat "$dir/kafka.pid")
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker in $dir (pid $pid) exited during startup"
      show_logs "$dir"
      rm -f "$dir/kafka.pid"
      return 1
    fi
    if port_open "$port"; then
      if grep -q '^listeners=SASL_SSL' "$dir/server.properties"; then
        # A SASL_SSL listener cannot take the raw probe: wait for the
        # line the broker logs once it serves requests, in what this start
        # added to server.log (launch notes where that begins).
        local from=0
        from=$(cat "$dir/.log-start" 2>/dev/null || echo 0)
        (( $(stat -c %s "$dir/server.log" 2>/dev/null || echo 0) >= from )) || from=0
        tail -c "+$((from + 1))" "$dir/server.log" 2>/dev/null | grep -q 'Kafka Server started' && return 0
      elif metadata_ok "$port"; then
        return 0
      fi
    fi
    if (( $(now_ms) > deadline )); then
      log "broker in $dir did not answer Metadata on 127.0.0.1:$port within ${START_TIMEOUT}s"
      show_logs "$dir"
      return 1
    fi
    sleep 0.2
  done
}

stop_dirs() { # DIR...: SIGTERM all, wait, SIGKILL stragglers
  local dir pid
  local -a dirs=() pids=()
  for dir in "$@"; do
    if pid=$(live_pid "$dir"); then
      log "stopping broker in $dir (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      dirs+=("$dir")
      pids+=("$pid")
    else
      rm -f "$dir/kafka.pid"
    fi
  done
  (( ${#pids[@]} > 0 )) || return 0
  local t0 deadline i alive
  t0=$(now_ms)
  deadline=$(( t0 + STOP_TIMEOUT * 1000 ))
  while :; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || break
    if (( $(now_ms) > deadline )); then
      for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
          log "broker in ${dirs[$i]} (pid ${pids[$i]}) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
          kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
      done
      while :; do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
      done
      break
    fi
    sleep 0.1
  done
  for dir in "${dirs[@]}"; do
    rm -f "$dir/kafka.pid"
    # An empty cgroup of the node's (see gid_cgroup) goes with it.
    [[ -s $dir/kafka.gid ]] && { rmdir "$(gid_cgroup "$(cat "$dir/kafka.gid")")" 2>/dev/null || true; }
  done
  log "stopped in $(( $(now_ms) - t0 )) ms"
}

# --fresh wipes DIR, but only if everything in it is ours: a mistyped
# --data /tmp must not delete other people's files.
safe_wipe() {
  local dir=$1 entry
  [[ $dir != / && $dir != "$HOME" && $REPO_ROOT != "$dir" && $REPO_ROOT != "$dir"/* ]] ||
    die "refusing to wipe $dir"
  for entry in "$dir"/* "$dir"/.[!.]*; do
    [[ -e $entry || -L $entry ]] || continue
    case ${entry##*/} in
      server.properties | server.properties.tmp | kafka.pid | kafka.out | kafka.bootstrap | .kafka.sh.lock | \
        server.log* | .log-start | logs | cluster.id | node[123] | tls | secrets | admin.properties | kafka.gid) ;;
      *) die "refusing to wipe $dir: it holds $entry, which deploy/kafka.sh did not create" ;;
    esac
  done
  rm -rf "${dir:?}"/*
}

# ---------------------------------------------------------------- commands

DATA='' PORT='' CPORT='' NODE_ID=1 FRESH=0 BASE_PORT='' SASL_SSL=0 GIDS=0
OAUTH_JWKS='' OAUTH_AUDIENCE=profiles-kafka
EXTRA=() USERS=()
parse_args() {
  while (( $# > 0 )); do
    case $1 in
      --data) DATA=${2:?--data needs a directory}; shift 2 ;;
      --port) PORT=${2:?--port needs a number}; shift 2 ;;
      --controller-port) CPORT=${2:?--controller-port needs a number}; shift 2 ;;
      --base-port) BASE_PORT=${2:?--base-port needs a number}; shift 2 ;;
      --node-id) NODE_ID=${2:?--node-id needs a number}; shift 2 ;;
      --timeout) START_TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
      --fresh) FRESH=1; shift ;;
      --sasl-ssl) SASL_SSL=1; shift ;;
      --oauth-jwks) OAUTH_JWKS=${2:?--oauth-jwks needs a JWKS file}; shift 2 ;;
      --oauth-audience) OAUTH_AUDIENCE=${2:?--oauth-audience needs a value}; shift 2 ;;
      --gids) GIDS=1; shift ;;
      --users) read -r -a USERS <<<"${2?--users needs a list of names}"; shift 2 ;;
      --extra) take_extra "$@"; shift "$TAKEN" ;; # one or more key=value words
      --extra=*) EXTRA+=("${1#--extra=}"); shift ;;
      -h | --help) usage ;;
      *) die "unknown argument: $1 (see: $0 --help)" ;;
    esac
  done
  check_args PORT CPORT NODE_ID BASE_PORT START_TIMEOUT
  if [[ -n $OAUTH_JWKS ]]; then
    (( SASL_SSL )) || die "--oauth-jwks needs --sasl-ssl"
    [[ $OAUTH_JWKS == /* ]] || die "--oauth-jwks needs an absolute path, not $OAUTH_JWKS"
    [[ -s $OAUTH_JWKS ]] || die "--oauth-jwks: no JWKS in $OAUTH_JWKS"
  fi
}

# Serialize start/stop on one data dir (fd 8; closed for the broker itself).
lock_data() { exec 8>"$DATA/.kafka.sh.lock"; flock 8; }

cmd_start() {
  parse_args "$@"
  lock_data
  local t0 pid port
  t0=$(now_ms)
  if (( FRESH )); then
    stop_dirs "$DATA"
    safe_wipe "$DATA"
  fi
  if pid=$(live_pid "$DATA"); then
    port=$(prop "$DATA/server.properties" advertised.listeners | sed 's/.*://')
    log "already running in $DATA (pid $pid, 127.0.0.1:$port)"
    wait_ready "$DATA" "$port" $(( $(now_ms) + START_TIMEOUT * 1000 )) || exit 1
    return 0
  fi
  fetch
  if [[ -n $PORT || -n $CPORT ]]; then
    [[ -n $PORT && -n $CPORT ]] || die "give both --port and --controller-port"
    [[ $PORT != "$CPORT" ]] || die "--port and --controller-port must differ"
    local kind=single
    if (( SASL_SSL )); then
      kind=secure
      make_tls "$DATA"
      make_secrets "$DATA" ${USERS[@]+"${USERS[@]}"}
      admin_props "$DATA"
    fi
    write_props "$DATA" "$NODE_ID" "$PORT" "$CPORT" "$NODE_ID@127.0.0.1:$CPORT" "$kind" ${EXTRA[@]+"${EXTRA[@]}"}
  else
    [[ -f $DATA/server.properties ]] || die "--port and --controller-port are required (no $DATA/server.properties to reuse)"
    (( ${#EXTRA[@]} == 0 )) || die "--extra needs --port and --controller-port (server.properties is rewritten)"
    log "reusing $DATA/server.properties"
  fi
  port=$(prop "$DATA/server.properties" advertised.listeners | sed 's/.*://')
  local cport
  cport=$(prop "$DATA/server.properties" listeners | sed 's/.*CONTROLLER:\/\/[^:]*://; s/,.*//')
  for p in "$port" "$cport"; do
    port_open "$p" && die "port 127.0.0.1:$p is already in use"
  done
  if [[ ! -f $DATA/logs/meta.properties ]]; then
    local cid=${CLUSTER_ID:-$(random_cluster_id)} u
    local -a scram=()
    if [[ -d $DATA/secrets ]] && grep -q '^listeners=SASL_SSL' "$DATA/server.properties"; then
      for u in "$DATA"/secrets/*.password; do
        u=$(basename "$u" .password)
        [[ $u == controller ]] && continue
        scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(secret "$DATA" "$u")]"
          --add-scram "SCRAM-SHA-256=[name=$u,password=$(secret "$DATA" "$u")]")
      done
    fi
    format_storage "$DATA" "$cid" ${scram[@]+"${scram[@]}"}
    log "formatted $DATA/logs (cluster id $cid)"
  fi
  launch "$DATA"
  pid=$(cat "$DATA/kafka.pid")
  if ! wait_ready "$DATA" "$port" $(( t0 + START_TIMEOUT * 1000 )); then
    stop_dirs "$DATA"
    exit 1
  fi
  log "broker ready on 127.0.0.1:$port (pid $pid, data $DATA) in $(( $(now_ms) - t0 )) ms"
}

cmd_stop() {
  parse_args "$@"
  lock_data
  stop_dirs "$DATA"
}

cmd_status() {
  parse_args "$@"
  local pid
  if pid=$(live_pid "$DATA"); then
    echo "running (pid $pid, $(cat "$DATA/kafka.bootstrap" 2>/dev/null || echo '?'), data $DATA)"
  else
    echo "stopped ($DATA)"
    return 1
  fi
}

cmd_tool() {
  (( $# > 0 )) || die "usage: $0 tool CLASS [ARGS...]"
  fetch
  run_tool "$@"
}


cmd_start_cluster() {
  parse_args "$@"
  lock_data
  [[ -n $BASE_PORT ]] || die "--base-port N is required"
  local t0 i dir cid voters
  t0=$(now_ms)
  if (( FRESH )); then
    stop_dirs "$DATA/node1" "$DATA/node2" "$DATA/node3"
    safe_wipe "$DATA"
  fi
  fetch
  voters="1@127.0.0.1:$((BASE_PORT + 10)),2@127.0.0.1:$((BASE_PORT + 11)),3@127.0.0.1:$((BASE_PORT + 12))"
  # One cluster id for all nodes, kept beside them.
  if [[ -f $DATA/cluster.id ]]; then
    cid=$(cat "$DATA/cluster.id")
  else
    cid=$(random_cluster_id)
    echo "$cid" >"$DATA/cluster.id"
  fi
  local -a to_start=() fmt_pids=()
  for i in 1 2 3; do
    dir=$(abs_dir "$DATA/node$i")
    if live_pid "$dir" >/dev/null; then
      log "node $i already running"
      continue
    fi
    write_props "$dir" "$i" $((BASE_PORT + i - 1)) $((BASE_PORT + 10 + i - 1)) "$voters" cluster \
      ${EXTRA[@]+"${EXTRA[@]}"}
    # --gids: node i runs under group id 200000 + its broker port (unique
    # on the machine, as the port is), here and at every later start.
    if (( GIDS )); then
      echo $((200000 + BASE_PORT + i - 1)) >"$dir/kafka.gid"
    fi
    for p in $((BASE_PORT + i - 1)) $((BASE_PORT + 10 + i - 1)); do
      port_open "$p" && die "port 127.0.0.1:$p is already in use"
    done
    if [[ ! -f $dir/logs/meta.properties ]]; then
      format_storage "$dir" "$cid" &
      fmt_pids+=($!)
    fi
    to_start+=("$i")
  done
  for p in ${fmt_pids[@]+"${fmt_pids[@]}"}; do wait "$p" || die "formatting failed"; done
  for i in ${to_start[@]+"${to_start[@]}"}; do launch "$DATA/node$i"; done
  # A static quorum needs a majority up before any broker can become ready.
  local deadline=$(( t0 + START_TIMEOUT * 1000 )) failed=0
  for i in 1 2 3; do
    wait_ready "$DATA/node$i" $((BASE_PORT + i - 1)) "$deadline" || failed=1
  done
  if (( failed )); then
    stop_dirs "$DATA/node1" "$DATA/node2" "$DATA/node3"
    exit 1
  fi
  log "cluster ready on 127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2)) in $(( $(now_ms) - t0 )) ms"
}

cmd_stop_cluster() {
  parse_args "$@"
  lock_data
  stop_dirs "$DATA/node1" "$DATA/node2" "$DATA/node3"
}

main() {
  (( $# > 0 )) || usage
  local cmd=$1
  shift
  case $cmd in
    fetch) fetch ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    tool) cmd_tool "$@" ;;
    start-cluster) cmd_start_cluster "$@" ;;
    stop-cluster) cmd_stop_cluster "$@" ;;
    -h | --help | help) usage ;;
    *) die "unknown command: $cmd (see: $0 --help)" ;;
  esac
}

main "$@"
