def _main():
    out = {"registry": read_registry(), "engines": {}}
    for name, fn in sorted(globals().items()):
        if name.startswith("observe_") and callable(fn):
            try:
                out["engines"][name[len("observe_") :]] = fn()
            except Exception as exc:  # reported per engine; the caller fails closed on it
                out["engines"][name[len("observe_") :]] = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(out, sys.stdout, sort_keys=True)


_main()
