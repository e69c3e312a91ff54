# Sourced by bin/demo and bin/test: compile the shipped translations (locale/*/LC_MESSAGES/
# django.po) into .mo files, which are build output and not committed. Needs msgfmt from GNU
# gettext: installed from Debian's `gettext` package when missing (apt-get, sudo only when not
# root, as bin/install_browser.sh installs chromium).
candor_messages() {
  if ! command -v msgfmt >/dev/null 2>&1; then
    echo "Installing Debian's gettext (msgfmt compiles the shipped translations)"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gettext >/dev/null; }; then
      echo "!! msgfmt is missing and gettext could not be installed: install GNU gettext" \
        "(Debian/Ubuntu: apt-get install gettext; macOS: brew install gettext), then run" \
        "'python manage.py compilemessages'. Until then every toast reads English." >&2
      return 1
    fi
  fi
  # Only the project's own locale/ folder: not the virtual environments' packages.
  "$VENV/bin/python" manage.py compilemessages -v0 \
    --ignore '.venv*' --ignore bench --ignore .cache --ignore node_modules --ignore staticfiles
}
