# Shared by ci/test and ci/demo (sourced, not run): makes sure the host has what Carousel's
# build and the Bochs backend need, installing it when running as root.

# Debian packages the tests need: Bochs with its BIOS images and headless display, what
# grub-mkrescue needs for a BIOS-bootable ISO, QEMU (for the no-VMX scenario), and headless
# Chromium (for the report page's browser test).
CAROUSEL_PACKAGES=(bochs bochsbios vgabios bochs-term grub-pc-bin grub-common xorriso mtools qemu-system-x86 chromium)
CAROUSEL_TARGET=x86_64-unknown-none

carousel_missing_packages() {
    local missing=()
    local package
    for package in "${CAROUSEL_PACKAGES[@]}"; do
        if command -v dpkg-query >/dev/null 2>&1; then
            if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
                missing+=("$package")
            fi
        fi
    done
    if ! command -v dpkg-query >/dev/null 2>&1; then
        # Not Debian: look for the files the packages provide.
        command -v bochs >/dev/null 2>&1 || missing+=(bochs)
        [[ -f /usr/share/bochs/BIOS-bochs-latest ]] || missing+=(bochsbios)
        [[ -f /usr/share/vgabios/vgabios.bin ]] || missing+=(vgabios)
        [[ -d /usr/lib/grub/i386-pc ]] || missing+=(grub-pc-bin)
        command -v grub-mkrescue >/dev/null 2>&1 || missing+=(grub-common)
        command -v xorriso >/dev/null 2>&1 || missing+=(xorriso)
        command -v mformat >/dev/null 2>&1 || missing+=(mtools)
        command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
        command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    fi
    echo "${missing[@]}"
}

carousel_setup() {
    local missing
    missing="$(carousel_missing_packages)"
    if [[ -n "$missing" ]]; then
        if [[ "$(id -u)" == 0 ]]; then
            echo "== installing: $missing"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update
            apt-get install -y "${CAROUSEL_PACKAGES[@]}"
        else
            echo "missing packages: $missing" >&2
            echo "install them with:" >&2
            echo "  sudo apt-get update && sudo apt-get install -y ${CAROUSEL_PACKAGES[*]}" >&2
            exit 1
        fi
    fi
    if ! rustup target list --installed | grep -qx "$CAROUSEL_TARGET"; then
        echo "== rustup target add $CAROUSEL_TARGET"
        rustup target add "$CAROUSEL_TARGET"
    fi
}
