# Shared by the azd hooks in this folder (sourced, not run). POSIX sh.
#
# azd runs hooks from the project root with the environment's values exported; `azd env get-values`
# is read again here so that the hooks also work when run by hand (`azd hooks run postdeploy`,
# or `sh infra/hooks/postdeploy.sh` in a shell without them).

hook_values_file=""

# load_env_values: read `azd env get-values` (KEY="value" lines) once.
load_env_values() {
    hook_values_file=$(mktemp)
    if ! azd env get-values >"$hook_values_file" 2>/dev/null; then
        echo "cosell hook: 'azd env get-values' failed; run this inside the azd project (azd env select <name>)." >&2
        return 1
    fi
}

# env_value NAME: the value azd holds for NAME (empty if none).
env_value() {
    sed -n "s/^$1=\"\\(.*\\)\"\$/\\1/p; s/^$1=\\([^\"].*\\)\$/\\1/p" "$hook_values_file" | head -n 1
}

# cosell_command: the CLI on PATH, else the project's virtualenv (make install).
cosell_command() {
    if command -v cosell >/dev/null 2>&1; then
        echo cosell
    elif [ -x .venv/bin/cosell ]; then
        echo .venv/bin/cosell
    else
        echo ""
    fi
}

# python_command: for the JSON the hooks convert (the virtualenv's, else python3).
python_command() {
    if [ -x .venv/bin/python ]; then
        echo .venv/bin/python
    else
        echo python3
    fi
}

# interactive: true when a person can answer (a terminal, not CI, not switched off).
interactive() {
    [ -t 0 ] && [ -z "${CI:-}" ] && [ "${COSELL_HOOK_INTERACTIVE:-true}" != "false" ]
}

hooks_off() {
    [ "${COSELL_HOOKS:-on}" = "off" ]
}
