"""Nova virt driver for the integration tests: Nova's fake driver, with real guests.

``GuestDriver`` behaves exactly like ``nova.virt.fake.FakeDriver`` (fast, no
guest) except for instances whose image has these properties:

``grib_test_guest=true``
    spawn boots a REAL guest under qemu from the instance's Glance image:
    the image is downloaded into the instance directory, a qcow2 overlay is
    the instance's disk, user-data and metadata (public keys) are on a config
    drive (ISO9660, label config-2, without network_data.json so the guest
    keeps qemu's user network and uses DHCP). The guest's port 22 is
    forwarded from the instance's fixed address (on 127.77.0.0/24) port 22,
    so SSH to the server's address reaches the guest. The serial console is
    a file returned as console output. power_off is an ACPI shutdown (QMP
    system_powerdown; kill after the timeout), power_on boots again, destroy
    kills qemu and removes the files, snapshot uploads the flattened disk to
    Glance as qcow2/bare. At most GRIB_GUEST_SLOTS guests run at once
    (default 1); later ones wait in spawn (the server stays BUILD) until a
    running guest is powered off or destroyed. A guest that powers itself off
    is reported to Nova (lifecycle event STOPPED), so the server goes SHUTOFF.

``grib_test_fail_spawn=true``
    spawn fails: the server goes ERROR with a fault naming the property.

Snapshots of other instances upload 1 MiB of zeros as raw/bare, so that they
become ``active`` (the stock fake driver leaves them ``queued`` forever).

Every time a guest starts (spawn, power_on, reboot) the driver appends one
line to the file GRIB_GUEST_BOOTS, so that CI can count guest boots (each
costs about a minute of both CPUs under TCG). Tab-separated fields:

    time (UTC, RFC 3339)  server name  server UUID  spawn|power_on|reboot
    image ID  image size in bytes  accel (tcg|kvm)

Server names carry the test's prefix (testenv.Prefix), so boots can be
counted per test. An image of a few MiB has no OS: its guest sits in the
firmware and costs almost nothing.

Environment (set by .ci/openstack-up.sh): GRIB_VIRT_LOG (this driver's log
file), GRIB_GUEST_BOOTS (the boot record above), GRIB_GUEST_SLOTS,
GRIB_GUEST_ACCEL (auto|kvm|tcg), GRIB_GUEST_MAX_MB (memory cap per guest,
default 4096).
"""

import base64
import collections
import ctypes
import io
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from nova.compute import power_state
from nova.compute import task_states
from nova.compute import vm_states
import nova.conf
from nova import exception
from nova.image import glance
from nova import utils
from nova.virt import event as virtevent
from nova.virt import fake

CONF = nova.conf.CONF
LOG = logging.getLogger('grib_qemu_virt')

GUEST_PROP = 'grib_test_guest'
FAIL_PROP = 'grib_test_fail_spawn'
MAX_CONSOLE_BYTES = 100 * 1024
QEMU = 'qemu-system-x86_64'
LOOPBACK = ipaddress.ip_network('127.0.0.0/8')
PR_SET_PDEATHSIG = 1


def _truthy(value):
    return str(value).strip().lower() in ('true', '1', 'yes', 'on')


def _image_prop(instance, name):
    """An image property as Nova recorded it when the server was created."""
    return (instance.system_metadata or {}).get('image_' + name)


def _kill_with_parent():
    """In qemu's child process: die with nova-compute, even on SIGKILL."""
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _run(*cmd):
    """Run a short host command; raise with its stderr on failure."""
    LOG.info('run: %s', ' '.join(cmd))
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=1800, check=False)
    if res.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (
            cmd[0], res.returncode, res.stderr.decode(errors='replace')[-2000:]))
    return res.stdout


def _qmp(sock_path, command, timeout=10):
    """Send one QMP command to a running qemu and return its reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sock_path)
        reader = sock.makefile('rb')
        json.loads(reader.readline())  # greeting
        for cmd in ({'execute': 'qmp_capabilities'}, {'execute': command}):
            sock.sendall(json.dumps(cmd).encode() + b'\n')
            while True:  # skip asynchronous events until the reply
                reply = json.loads(reader.readline())
                if 'return' in reply or 'error' in reply:
                    break
            if 'error' in reply:
                raise RuntimeError('QMP %s: %s' % (cmd['execute'], reply['error']))
        return reply['return']
    finally:
        sock.close()


def probe_accel(workdir):
    """Pick kvm only if a KVM guest really runs here; tcg otherwise.

    A present /dev/kvm is not enough: on nested "PVM" hosts (module kvm_pvm,
    no vmx/svm CPU flag) qemu starts and even runs SeaBIOS, but a stock guest
    kernel never runs. So KVM needs hardware virtualisation (kvm_intel or
    kvm_amd loaded) and an empty VM that runs SeaBIOS to its banner on the
    debug port.
    """
    wanted = os.environ.get('GRIB_GUEST_ACCEL', 'auto')
    if wanted in ('kvm', 'tcg'):
        return wanted, 'set by GRIB_GUEST_ACCEL'
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        return 'tcg', '/dev/kvm is not usable'
    if not any(os.path.isdir('/sys/module/' + m) for m in ('kvm_intel', 'kvm_amd')):
        return 'tcg', '/dev/kvm is there but neither kvm_intel nor kvm_amd is loaded'
    out = os.path.join(workdir, 'kvm-probe.log')
    proc = subprocess.Popen(
        [QEMU, '-accel', 'kvm', '-cpu', 'host', '-m', '64', '-nodefaults',
         '-display', 'none', '-no-user-config',
         '-chardev', 'file,id=dbg,path=' + out,
         '-device', 'isa-debugcon,iobase=0x402,chardev=dbg'],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=_kill_with_parent)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with open(out, 'rb') as f:
                    if b'SeaBIOS' in f.read():
                        return 'kvm', 'a KVM guest ran SeaBIOS'
            except FileNotFoundError:
                pass
            time.sleep(0.5)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors='replace').strip()
            return 'tcg', 'qemu -accel kvm failed: %s' % err[-300:]
        return 'tcg', 'a KVM guest did not run SeaBIOS within 10 s'
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.exists(out):
            os.unlink(out)


class Slots(object):
    """At most ``size`` guests run at once; the others wait, first come first served."""

    def __init__(self, size):
        self.size = size
        self.holders = set()
        self.waiting = collections.deque()

    def acquire(self, uuid, still_wanted):
        """Wait for a slot. still_wanted() raises when the wait should end."""
        if uuid in self.holders:
            return
        self.waiting.append(uuid)
        try:
            logged = False
            while True:
                if self.waiting[0] == uuid and len(self.holders) < self.size:
                    self.holders.add(uuid)
                    return
                if not logged:
                    LOG.info('guest %s queued: %d running, %d waiting',
                             uuid, len(self.holders), len(self.waiting))
                    logged = True
                time.sleep(1)  # green under eventlet
                still_wanted()
        finally:
            self.waiting.remove(uuid)

    def release(self, uuid):
        if uuid in self.holders:
            self.holders.discard(uuid)
            LOG.info('guest %s released its slot', uuid)


class Guest(object):
    """One qemu guest and its files (in the instance directory)."""

    def __init__(self, uuid, name=None, image_id=None):
        self.uuid = uuid
        self.name = name or '-'
        self.image_id = image_id or '-'
        self.dir = os.path.join(CONF.instances_path, uuid)
        self.disk = os.path.join(self.dir, 'disk')
        self.base = os.path.join(self.dir, 'base')
        self.config_drive = os.path.join(self.dir, 'disk.config')
        self.console = os.path.join(self.dir, 'console.log')
        self.qmp = os.path.join(self.dir, 'qmp.sock')
        self.pidfile = os.path.join(self.dir, 'qemu.pid')
        self.proc = None
        self.stopping = False  # the driver itself is stopping qemu
        self.boot_args = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None


class GuestDriver(fake.FakeDriver):
    """FakeDriver that boots real qemu guests for images marked grib_test_guest."""

    capabilities = dict(fake.FakeDriver.capabilities,
                        supports_image_type_qcow2=True)

    def __init__(self, virtapi, read_only=False):
        super(GuestDriver, self).__init__(virtapi, read_only)
        self._guests = {}
        self._slots = Slots(int(os.environ.get('GRIB_GUEST_SLOTS', '1')))
        self._accel = 'tcg'
        self._max_mb = int(os.environ.get('GRIB_GUEST_MAX_MB', '4096'))

    # ------------------------------------------------------------ host
    def init_host(self, host):
        super(GuestDriver, self).init_host(host)
        path = os.environ.get('GRIB_VIRT_LOG')
        if path and not any(isinstance(h, logging.FileHandler) for h in LOG.handlers):
            handler = logging.FileHandler(path)
            handler.setFormatter(logging.Formatter(
                '%(asctime)s %(levelname)s %(message)s'))
            LOG.addHandler(handler)
            LOG.setLevel(logging.INFO)
        os.makedirs(CONF.instances_path, exist_ok=True)
        self._kill_stale_guests()
        self._accel, why = probe_accel(CONF.instances_path)
        LOG.info('driver ready on host %s: accel %s (%s), %d guest slot(s)',
                 host, self._accel, why, self._slots.size)

    def cleanup_host(self, host):
        for guest in list(self._guests.values()):
            self._kill(guest)

    def _kill_stale_guests(self):
        """Kill a qemu left from an earlier nova-compute (it cannot be adopted)."""
        for name in os.listdir(CONF.instances_path):
            pidfile = os.path.join(CONF.instances_path, name, 'qemu.pid')
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
                with open('/proc/%d/cmdline' % pid, 'rb') as f:
                    cmdline = f.read()
            except (OSError, ValueError):
                continue
            if ('grib-%s' % name).encode() in cmdline:
                LOG.warning('killing stale qemu pid %d of instance %s', pid, name)
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------ spawn
    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        if _truthy(_image_prop(instance, FAIL_PROP)):
            LOG.info('spawn of %s fails on purpose (%s=true)', instance.uuid, FAIL_PROP)
            raise exception.ImageUnacceptable(
                image_id=instance.image_ref,
                reason='%s=true: the test driver refuses to spawn it' % FAIL_PROP)
        if not _truthy(_image_prop(instance, GUEST_PROP)):
            return super(GuestDriver, self).spawn(
                context, instance, image_meta, injected_files, admin_password,
                allocations, network_info, block_device_info, power_on, accel_info)

        guest = Guest(instance.uuid, instance.display_name, instance.image_ref)
        address, mac = self._loopback_port(network_info)
        self._slots.acquire(instance.uuid, lambda: self._check_not_deleted(instance))
        try:
            self._prepare_disks(context, instance, image_meta, guest)
            guest.boot_args = self._qemu_args(instance, guest, address, mac)
            self._guests[instance.uuid] = guest
            self._boot(guest, 'spawn')
        except Exception as e:
            LOG.exception('guest %s failed to start', instance.uuid)
            self._slots.release(instance.uuid)
            self._guests.pop(instance.uuid, None)
            self._kill(guest)
            shutil.rmtree(guest.dir, ignore_errors=True)
            raise exception.InstanceDeployFailure(
                reason='test driver could not boot the guest: %s' % e)
        super(GuestDriver, self).spawn(
            context, instance, image_meta, injected_files, admin_password,
            allocations, network_info, block_device_info, power_on, accel_info)
        if not power_on:
            self.power_off(instance, timeout=0)

    def _check_not_deleted(self, instance):
        """Raise if the server was deleted while its guest waited for a slot."""
        try:
            instance.refresh()
        except exception.InstanceNotFound:
            raise
        if (instance.task_state == task_states.DELETING
                or instance.vm_state == vm_states.DELETED):
            LOG.info('guest %s deleted while queued', instance.uuid)
            raise exception.UnexpectedDeletingTaskStateError(
                instance_uuid=instance.uuid, expected=instance.task_state,
                actual=task_states.DELETING)

    @staticmethod
    def _loopback_port(network_info):
        """The instance's first fixed IPv4 address on 127/8, and its MAC."""
        for vif in network_info or []:
            for ip in vif.fixed_ips():
                addr = ipaddress.ip_address(ip['address'])
                if addr.version == 4 and addr in LOOPBACK:
                    return str(addr), vif['address']
        return None, None

    def _prepare_disks(self, context, instance, image_meta, guest):
        os.makedirs(guest.dir, exist_ok=True)
        started = time.monotonic()
        glance.API().download(context, instance.image_ref, dest_path=guest.base)
        if image_meta.obj_attr_is_set('disk_format') and image_meta.disk_format in ('raw', 'qcow2'):
            fmt = image_meta.disk_format
            info = json.loads(_run('qemu-img', 'info', '--output=json', '-f', fmt, guest.base))
        else:  # let qemu-img tell
            info = json.loads(_run('qemu-img', 'info', '--output=json', guest.base))
            fmt = info['format']
        virtual = info['virtual-size']
        size = instance.flavor.root_gb * 1024 ** 3
        # 4 KiB clusters, the guest file system's blocks: qcow2 ignores a
        # discard of less than a cluster, so 64 KiB ones kept freed blocks
        # beside live data in the snapshot despite the guest's fstrim.
        args = ['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096',
                '-F', fmt, '-b', guest.base, guest.disk]
        if size > virtual:
            args.append(str(size))
        _run(*args)
        self._make_config_drive(instance, guest)
        LOG.info('guest %s: image %s (%s) downloaded, disk and config drive ready in %.1fs',
                 instance.uuid, instance.image_ref, fmt, time.monotonic() - started)

    @staticmethod
    def _make_config_drive(instance, guest):
        keys = []
        for kp in (instance.keypairs or []):
            keys.append({'name': kp.name, 'type': kp.type or 'ssh', 'data': kp.public_key})
        if not keys and instance.key_data:
            keys.append({'name': instance.key_name or 'key', 'type': 'ssh',
                         'data': instance.key_data})
        meta = {
            'uuid': instance.uuid,
            'name': instance.display_name,
            'hostname': instance.hostname or 'guest',
            'launch_index': instance.launch_index or 0,
            'availability_zone': instance.availability_zone or 'nova',
            'project_id': instance.project_id,
            'public_keys': {k['name']: k['data'] for k in keys},
            'keys': keys,
            'meta': dict(instance.metadata or {}),
            'devices': [],
        }
        tree = tempfile.mkdtemp(dir=guest.dir)
        try:
            latest = os.path.join(tree, 'openstack', 'latest')
            os.makedirs(latest)
            with open(os.path.join(latest, 'meta_data.json'), 'w') as f:
                json.dump(meta, f)
            with open(os.path.join(latest, 'vendor_data.json'), 'w') as f:
                f.write('{}')
            if instance.user_data:
                with open(os.path.join(latest, 'user_data'), 'wb') as f:
                    f.write(base64.b64decode(instance.user_data))
            # No network_data.json: cloud-init then DHCPs on qemu's user network.
            _run('genisoimage', '-quiet', '-o', guest.config_drive, '-V', 'config-2',
                 '-r', '-J', '-l', '-ldots', '-allow-lowercase', '-allow-multidot',
                 '-input-charset', 'utf-8', tree)
        finally:
            shutil.rmtree(tree, ignore_errors=True)

    def _qemu_args(self, instance, guest, address, mac):
        memory = min(instance.flavor.memory_mb, self._max_mb)
        cpus = max(1, min(instance.flavor.vcpus, os.cpu_count() or 1))
        netdev = 'user,id=net0,restrict=on'
        if address:
            netdev += ',hostfwd=tcp:%s:22-:22' % address
        else:
            LOG.warning('guest %s has no fixed address on 127/8: no SSH forwarding',
                        instance.uuid)
        nic = 'virtio-net-pci,netdev=net0' + (',mac=%s' % mac if mac else '')
        cpu = 'host' if self._accel == 'kvm' else 'qemu64'
        return [QEMU, '-name', 'grib-%s' % instance.uuid,
                '-accel', self._accel, '-cpu', cpu, '-m', str(memory),
                '-smp', str(cpus), '-nodefaults', '-no-user-config', '-display', 'none',
                '-chardev', 'file,id=serial0,path=%s,append=on' % guest.console,
                '-serial', 'chardev:serial0',
                '-drive', 'file=%s,if=virtio,format=qcow2,discard=unmap' % guest.disk,
                '-drive', 'file=%s,if=virtio,format=raw,readonly=on' % guest.config_drive,
                '-netdev', netdev, '-device', nic,
                '-device', 'virtio-rng-pci',
                '-qmp', 'unix:%s,server=on,wait=off' % guest.qmp,
                '-pidfile', guest.pidfile]

    def _boot(self, guest, kind):
        guest.stopping = False
        log = open(os.path.join(guest.dir, 'qemu.log'), 'ab')
        try:
            # Same process group as nova-compute: stopping its group stops qemu too.
            guest.proc = subprocess.Popen(
                guest.boot_args, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_kill_with_parent)
        finally:
            log.close()
        time.sleep(1)
        if guest.proc.poll() is not None:
            with open(os.path.join(guest.dir, 'qemu.log'), 'rb') as f:
                tail = f.read()[-1000:].decode(errors='replace')
            raise RuntimeError('qemu exited at once: %s' % tail.strip())
        LOG.info('guest %s booting: qemu pid %d (%s)', guest.uuid, guest.proc.pid,
                 ' '.join(guest.boot_args))
        self._record_boot(guest, kind)
        utils.spawn_n(self._watch, guest, guest.proc)

    def _record_boot(self, guest, kind):
        """Append one line to GRIB_GUEST_BOOTS (see the module docstring)."""
        path = os.environ.get('GRIB_GUEST_BOOTS')
        if not path:
            return
        try:
            size = os.path.getsize(guest.base)
        except OSError:
            size = -1
        fields = [time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), guest.name,
                  guest.uuid, kind, guest.image_id, str(size), self._accel]
        line = '\t'.join(' '.join(f.split()) or '-' for f in fields) + '\n'
        try:
            # One write of a short line to an O_APPEND file: lines never interleave.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as e:
            LOG.warning('could not record the boot of guest %s in %s: %s', guest.uuid, path, e)

    def _watch(self, guest, proc):
        """Notice a guest that powered itself off; tell Nova it stopped."""
        while proc.poll() is None:
            time.sleep(1)
        LOG.info('guest %s: qemu pid %d exited (%s)', guest.uuid, proc.pid, proc.returncode)
        if guest.stopping or guest.proc is not proc:
            return
        self._slots.release(guest.uuid)
        inst = self.instances.get(guest.uuid)
        if inst is not None:
            inst.state = power_state.SHUTDOWN
            self.emit_event(virtevent.LifecycleEvent(
                guest.uuid, virtevent.EVENT_LIFECYCLE_STOPPED))

    def _kill(self, guest):
        guest.stopping = True
        if guest.running():
            guest.proc.kill()
            guest.proc.wait()
            LOG.info('guest %s: qemu pid %d killed', guest.uuid, guest.proc.pid)

    # ------------------------------------------------------------ power
    def power_off(self, instance, timeout=0, retry_interval=0):
        guest = self._guests.get(instance.uuid)
        if guest is not None and guest.running():
            guest.stopping = True
            if timeout:
                self._acpi_shutdown(guest, timeout)
            self._kill(guest)
            self._slots.release(instance.uuid)
        elif guest is not None:
            self._slots.release(instance.uuid)
        super(GuestDriver, self).power_off(instance, timeout, retry_interval)

    def _acpi_shutdown(self, guest, timeout):
        started = time.monotonic()
        try:
            _qmp(guest.qmp, 'system_powerdown')
        except (OSError, RuntimeError, ValueError) as e:
            LOG.warning('guest %s: ACPI shutdown request failed: %s', guest.uuid, e)
            return
        deadline = started + timeout
        while guest.running() and time.monotonic() < deadline:
            time.sleep(0.5)
        if guest.running():
            LOG.warning('guest %s did not shut down within %ss: killing it',
                        guest.uuid, timeout)
        else:
            LOG.info('guest %s shut down (ACPI) in %.1fs', guest.uuid,
                     time.monotonic() - started)

    def power_on(self, context, instance, network_info,
                 block_device_info=None, accel_info=None):
        guest = self._guests.get(instance.uuid)
        if guest is not None and not guest.running():
            self._slots.acquire(instance.uuid, lambda: self._check_not_deleted(instance))
            try:
                self._boot(guest, 'power_on')
            except Exception:
                self._slots.release(instance.uuid)
                raise
        super(GuestDriver, self).power_on(context, instance, network_info,
                                          block_device_info, accel_info)

    def reboot(self, context, instance, network_info, reboot_type,
               block_device_info=None, bad_volumes_callback=None,
               accel_info=None):
        guest = self._guests.get(instance.uuid)
        if guest is not None and guest.running():
            _qmp(guest.qmp, 'system_reset')
            LOG.info('guest %s reset (%s reboot)', instance.uuid, reboot_type)
            self._record_boot(guest, 'reboot')
            return
        super(GuestDriver, self).reboot(context, instance, network_info, reboot_type,
                                        block_device_info, bad_volumes_callback,
                                        accel_info)

    # ------------------------------------------------------------ destroy
    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        guest = self._guests.pop(instance.uuid, None) or Guest(instance.uuid)
        self._kill(guest)
        self._slots.release(instance.uuid)
        if destroy_disks and os.path.isdir(guest.dir):
            shutil.rmtree(guest.dir, ignore_errors=True)
            LOG.info('guest %s destroyed, files removed', instance.uuid)
        super(GuestDriver, self).destroy(context, instance, network_info,
                                         block_device_info, destroy_disks,
                                         destroy_secrets)

    # ------------------------------------------------------------ console
    def get_console_output(self, context, instance):
        guest = self._guests.get(instance.uuid) or Guest(instance.uuid)
        try:
            with open(guest.console, 'rb') as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - MAX_CONSOLE_BYTES))
                return f.read()
        except FileNotFoundError:
            return super(GuestDriver, self).get_console_output(context, instance)

    # ------------------------------------------------------------ snapshot
    def snapshot(self, context, instance, image_id, update_task_state):
        if instance.uuid not in self.instances:
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        guest = self._guests.get(instance.uuid)
        if guest is None:
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            glance.API().update(context, image_id,
                                {'disk_format': 'raw', 'container_format': 'bare'},
                                data=io.BytesIO(b'\0' * (1 << 20)))
            LOG.info('snapshot %s of fake instance %s: 1 MiB raw', image_id, instance.uuid)
            return
        started = time.monotonic()
        flat = os.path.join(guest.dir, 'snapshot.qcow2')
        paused = False
        try:
            if guest.running():
                # Pause (which flushes qemu's caches) so that the copy is consistent.
                _qmp(guest.qmp, 'stop')
                paused = True
            args = ['qemu-img', 'convert', '-O', 'qcow2']
            if paused:
                args.append('-U')  # the paused qemu still holds the image lock
            _run(*(args + [guest.disk, flat]))
        finally:
            if paused and guest.running():
                _qmp(guest.qmp, 'cont')
        try:
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with open(flat, 'rb') as data:
                glance.API().update(context, image_id,
                                    {'disk_format': 'qcow2', 'container_format': 'bare'},
                                    data=data)
            LOG.info('snapshot %s of guest %s: %d bytes qcow2 uploaded in %.1fs',
                     image_id, instance.uuid, os.path.getsize(flat),
                     time.monotonic() - started)
        finally:
            os.unlink(flat)
