# Sourced by .ci/run and scripts/check-helm.sh: a virtual environment for the
# Python tools the checks use. Stock Debian/Ubuntu Pythons refuse a global
# `pip install` (PEP 668), so tools go into a venv this script creates.
#   PYTHON_VENV  where it lives (default target/venv in the repository)
# ensure_python_packages MODULE=REQUIREMENT...: installs each requirement whose
# module does not import yet; puts the venv's bin first on PATH either way.

PYTHON_VENV="${PYTHON_VENV:-$PWD/target/venv}"

ensure_python_venv() {
  if [[ ! -x "$PYTHON_VENV/bin/python" ]]; then
    printf '==> creating a Python virtual environment in %s\n' "$PYTHON_VENV"
    python3 -m venv "$PYTHON_VENV" || {
      echo "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
      return 1
    }
  fi
  case ":$PATH:" in
    *":$PYTHON_VENV/bin:"*) ;;
    *) export PATH="$PYTHON_VENV/bin:$PATH" ;;
  esac
  export VIRTUAL_ENV="$PYTHON_VENV"
}

ensure_python_packages() {
  ensure_python_venv || return 1
  local missing=() pair module requirement
  for pair in "$@"; do
    module="${pair%%=*}"
    requirement="${pair#*=}"
    "$PYTHON_VENV/bin/python" -c "import $module" 2>/dev/null || missing+=("$requirement")
  done
  if ((${#missing[@]})); then
    printf '==> installing into %s: %s\n' "$PYTHON_VENV" "${missing[*]}"
    "$PYTHON_VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
  fi
}
