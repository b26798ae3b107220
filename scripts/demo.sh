#!/usr/bin/env bash
# The main job on the local lab: validate, plan, apply, then a query through a tunnel.
# Works on a copy of examples/lab (in .demo/, git-ignored) so the credentials apply writes into the
# app's manifest never land in a tracked file.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=${DEMO_DIR:-.demo/lab}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

rm -rf "$demo" && mkdir -p "$(dirname "$demo")" && cp -r examples/lab "$demo"
# Passwords are derived from the environment's key; the demo makes one the first time. The example
# declares `environment: lab`, so the key is lab.key wherever the copy is.
key="${HOME}/.config/svcctl/keys/lab.key"
[ -n "${SVCCTL_KEY:-}" ] || [ -f "$key" ] || svcctl key init "$demo"

step "svcctl validate $demo"
svcctl validate "$demo"

step "svcctl plan $demo --detailed-exitcode --out $demo.plan   (exit 2: changes pending; saved for review)"
set +e; svcctl plan "$demo" --detailed-exitcode --no-color --out "$demo.plan"; rc=$?; set -e
echo "exit code: $rc"
[ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] || exit "$rc"

step "svcctl apply $demo.plan --env $demo   (exactly the reviewed plan: it is the approval, nothing is asked)"
svcctl apply "$demo.plan" --env "$demo" --no-color

step "svcctl plan $demo --detailed-exitcode   (exit 0: converged)"
svcctl plan "$demo" --detailed-exitcode --no-color

step "credentials written to $demo/apps/web/manifest.yml (passwords masked here)"
sed -E 's/("password": ?")[^"]*/\1***/g; s#(://[^:]+:)[^@]+@#\1***@#g' "$demo/apps/web/manifest.yml" | head -20

step "psql straight to the node as app web, with the credentials read from the manifest"
# What the app itself would do: read VCAP_SERVICES and connect over the network (the lab nodes allow the
# lab bridge in client_networks). The password goes through the environment, never the command line.
eval "$(python3 - "$demo/apps/web/manifest.yml" <<'PY'
import json, shlex, sys
from ruamel.yaml import YAML
app = YAML(typ="safe").load(open(sys.argv[1]))["applications"][0]
pg = json.loads(app["env"]["VCAP_SERVICES"])["postgresql"][0]["credentials"]
for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGDATABASE", "name"), ("PGUSER", "username"),
                 ("PGPASSWORD", "password")):
    print(f"export {var}={shlex.quote(str(pg[key]))}")
PY
)"
psql -c 'select session_user, inet_server_addr() as server, version()'
unset PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD

step "svcctl tunnel orders-db --app web -- psql   (a query through an SSH tunnel, as app web)"
svcctl tunnel orders-db --app web --env "$demo" -- \
  psql -c 'create table if not exists orders (id serial primary key, item text)' \
       -c "insert into orders (item) values ('demo')" \
       -c 'select session_user, current_user as owner, count(*) as orders from orders'

step "svcctl tunnel catalog-db -- mariadb   (a temporary readonly user, removed when the tunnel closes)"
svcctl tunnel catalog-db --env "$demo" -- mariadb -e 'select current_user() as user, database() as db'

step "svcctl tunnel sessions --app web -- redis-cli"
svcctl tunnel sessions --app web --env "$demo" -- redis-cli set demo:greeting hello
svcctl tunnel sessions --app web --env "$demo" -- redis-cli get demo:greeting
echo
echo "Demo done. Clean up the lab with: make lab-down"
