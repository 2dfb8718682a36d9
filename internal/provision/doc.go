// Package provision does everything that happens inside a builder guest, over
// SSH, for both builders (OpenStack and local qemu):
//
//   - Dial connects to the guest, retrying until its sshd answers, and checks
//     the host key: the one the build generated (BuildHostKey) and handed to
//     the guest in its user-data (PinnedHostKey), or the fingerprints
//     cloud-init printed on the console (HostKeysFromConsole). Without an
//     accepted key it fails closed, unless the caller chose
//     InsecureAcceptAnyHostKey. With a Target.Jump every connection goes
//     through that jump host (jump.go): its key checked against known_hosts,
//     a refusal not retried.
//   - WaitCloudInit polls cloud-init's status (JSON from `cloud-init status
//     --format json`, or /run/cloud-init/{status,result}.json on older
//     cloud-init) until it finishes, and tells done, degraded and error apart.
//   - RunScript pushes the user's script to a root-only directory on tmpfs and
//     runs it as root; its secrets travel on the SSH session's stdin only, and
//     its output is streamed with every secret value redacted.
//   - Verify runs the checks that must pass before an image is published.
//   - Clean resets cloud-init, removes the builder's key, the SSH host keys
//     and temporary files;
//     PowerOff shuts the guest down.
//
// A lost SSH connection (EOF, a reset, a read without an answer) is survived
// where doing the work again is safe: WaitCloudInit and Tail redial and read
// on; RunScript, Verify, Clean and PowerOff redial before they start when the
// connection is dead. A redial accepts only the host key the guest presented
// at the first dial, and none is tried once Clean removed the builder's key.
// A connection lost while a script runs is a KindBuild error that says so:
// the script is never run twice.
//
// Nothing here knows which cloud or hypervisor runs the guest: the caller
// passes an address, a key, and a way to read the console.
package provision
