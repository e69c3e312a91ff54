# Sourced by bin/demo and bin/test: a virtual environment with the given requirements file.
# Re-installs only when the requirements change.
candor_venv() {
  local requirements=$1
  VENV=${CANDOR_VENV:-.venv}
  local python=${CANDOR_PYTHON:-$(command -v python3.11 || command -v python3)}
  if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating a virtual environment in $VENV ($("$python" --version))"
    "$python" -m venv "$VENV"
  fi
  local stamp="$VENV/.candor-$(basename "$requirements").sha"
  local want
  want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing $requirements into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r "$requirements"
    echo "$want" > "$stamp"
  fi
}
