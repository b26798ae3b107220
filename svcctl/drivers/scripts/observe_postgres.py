# PostgreSQL: packages, Debian clusters (pg_lsclusters), their units, settings and pg_hba, and, for running
# clusters, databases, roles (SCRAM verifiers of sv_* roles only) and the grants that tell readwrite from
# readonly.  Read-only; one psql call for the cluster plus one per database (in parallel).

import concurrent.futures

PG_CLUSTER_SQL = r"""
SELECT json_build_object(
  'settings', (SELECT json_object_agg(name, setting) FROM pg_settings
               WHERE name IN ('listen_addresses', 'password_encryption', 'port')),
  'databases', (SELECT coalesce(json_agg(json_build_object(
      'name', d.datname, 'owner', pg_get_userbyid(d.datdba), 'connlimit', d.datconnlimit,
      'size', pg_database_size(d.oid), 'comment', shobj_description(d.oid, 'pg_database'),
      'acl', d.datacl::text[]) ORDER BY d.datname), '[]'::json)
    FROM pg_database d WHERE NOT d.datistemplate),
  'roles', (SELECT coalesce(json_agg(json_build_object(
      'name', r.rolname, 'login', r.rolcanlogin, 'superuser', r.rolsuper, 'connlimit', r.rolconnlimit,
      'config', r.rolconfig,
      'member_of', ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid ORDER BY 1),
      'verifier', CASE WHEN r.rolname ~ '^sv_' THEN a.rolpassword END) ORDER BY r.rolname), '[]'::json)
    FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname !~ '^pg_')
)
"""

PG_DATABASE_SQL = r"""
SELECT json_build_object(
  'public_acl', (SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'public'),
  'default_acl', (SELECT coalesce(json_agg(json_build_object(
      'role', pg_get_userbyid(d.defaclrole), 'schema', n.nspname, 'type', d.defaclobjtype,
      'acl', d.defaclacl::text[]) ORDER BY d.defaclrole, n.nspname, d.defaclobjtype), '[]'::json)
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace)
)
"""

PG_SYSTEM_DATABASES = ("postgres",)


def _pg_json(sql, database, port):
    """One psql query as the postgres superuser over the local socket; the JSON it prints."""
    rc, out, err = sh(
        ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", str(port), "-d", database, "-c", sql],
        user="postgres",
        timeout=20,
    )
    if rc != 0:
        raise RuntimeError(f"psql on database {database} failed ({rc}): {err.strip()[:300]}")
    return json.loads(out)


def _pg_db_grants(database, port):
    """The grants inside one database, or {"vanished": True} if it was dropped meanwhile."""
    rc, out, err = sh(
        ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", str(port), "-d", database, "-c", PG_DATABASE_SQL],
        user="postgres",
        timeout=20,
    )
    if rc != 0 and f'database "{database}" does not exist' in err:
        return {"vanished": True}
    if rc != 0:
        raise RuntimeError(f"psql on database {database} failed ({rc}): {err.strip()[:300]}")
    return json.loads(out)


def _pg_hba(path):
    """pg_hba.conf as token lists, comments and blank lines dropped."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return [line.split("#", 1)[0].split() for line in lines if line.split("#", 1)[0].strip()]


def _pg_packages():
    """Installed PostgreSQL server packages: major version -> Debian version."""
    rc, out, _ = sh(["dpkg-query", "-W", "-f=${Package}\t${Status}\t${Version}\n", "postgresql-[0-9]*"])
    found = {}
    for line in out.splitlines() if rc == 0 else []:
        package, status, version = line.split("\t")
        major = package[len("postgresql-") :]
        if status == "install ok installed" and major.isdigit():
            found[major] = version
    return found


def observe_postgres():
    packages = _pg_packages()
    result = {"packages": packages, "clusters": []}
    if not packages:
        return result
    rc, out, err = sh(["pg_lsclusters", "--json"])
    if rc != 0:
        raise RuntimeError(f"pg_lsclusters failed ({rc}): {err.strip()[:300]}")
    for c in sorted(json.loads(out), key=lambda c: (int(c["version"]), c["cluster"])):
        version, name = str(c["version"]), c["cluster"]
        config = c.get("config", {})
        cluster = {
            "version": version,
            "name": name,
            "port": int(c["port"]),
            "running": bool(c.get("running")),
            "start": c.get("start"),
            "unit": unit_state(f"postgresql@{version}-{name}"),
            "hba": _pg_hba(config.get("hba_file") or f"/etc/postgresql/{version}/{name}/pg_hba.conf"),
            "settings": {k: config[k] for k in ("listen_addresses", "password_encryption") if k in config},
        }
        if cluster["running"]:
            live = _pg_json(PG_CLUSTER_SQL, "postgres", cluster["port"])
            cluster["settings"] = live["settings"]
            cluster["databases"] = live["databases"]
            cluster["roles"] = live["roles"]
            # One psql per database (grants live in each); in parallel, so many instances stay fast.
            wanted = [db for db in cluster["databases"] if db["name"] not in PG_SYSTEM_DATABASES]
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                found = pool.map(lambda db, port=cluster["port"]: _pg_db_grants(db["name"], port), wanted)
                for db, grants in zip(wanted, found, strict=True):
                    db.update(grants)
            # A database dropped between the listing and its own query is simply gone: not an error.
            cluster["databases"] = [db for db in cluster["databases"] if not db.get("vanished")]
        result["clusters"].append(cluster)
    return result
