#!/bin/sh
# PID 1 of the astara-vm guest (tests/vm/vmkernel.py), after the initramfs made
# the host's / (read only, over 9p) the root: give it writable scratch, run pytest
# with the arguments the host wrote to the shared directory, write its output and
# exit code back there, power off. The guest has no network device.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 TMPDIR=/tmp
off() { sync; echo o > /proc/sysrq-trigger; sleep 10; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# the project, on the read-only root; kept aside first, since it may live under a
# directory the scratch tmpfs below covers (a clone in /tmp)
project=$(cd "$(dirname "$0")/../.." && pwd -P) || off
mkdir -p /dev/shm/astara-project
mount --bind "$project" /dev/shm/astara-project || off
for dir in /tmp /run /var/tmp /var/lib/astara /var/log /var/cache; do
    [ -d "$dir" ] && mount -t tmpfs -o mode=1777 tmpfs "$dir"
done
if [ ! -d "$project/tests/vm" ]; then  # covered: put it back at its own path
    mkdir -p "$project" && mount --bind /dev/shm/astara-project "$project" || off
fi
mkdir -p /run/netns /run/lock
mount -t tmpfs tmpfs /etc/netns 2>/dev/null || true
out=/tmp/astara-out
mkdir -p "$out"
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 astara-out "$out"; then
    echo "astara-vm: cannot mount the shared directory"
    off
fi
ip link set lo up
echo "astara-vm: kernel $(uname -r); pytest $(tr '\n' ' ' < "$out/args")"
cd "$project" || off
# one argument a line, as the host wrote them
set --
while IFS= read -r arg; do [ -n "$arg" ] && set -- "$@" "$arg"; done < "$out/args"
.venv/bin/pytest -p no:cacheprovider "$@" > "$out/pytest.out" 2>&1
code=$?
cat "$out/pytest.out"
echo "$code" > "$out/exit-code"
echo "astara-vm: pytest exited $code"
off
