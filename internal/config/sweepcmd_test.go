package config

import "testing"

func TestKeptCommands(t *testing.T) {
	for _, c := range []struct {
		k          KeptBuilder
		ssh, sweep string
	}{
		{KeptBuilder{Cloud: "a", Prefix: "p", Server: "id1", Addr: "127.77.0.5:22", User: "ubuntu", KeyFile: "/s/p/id_ed25519", KnownHosts: "/s/p/kept-id1.known_hosts"},
			"ssh -i /s/p/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=/s/p/kept-id1.known_hosts -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -p 22 ubuntu@127.77.0.5",
			"github-runner-image-builder --os-cloud a sweep --prefix p --server id1"},
		{KeptBuilder{Cloud: "my cloud", Prefix: "", Server: "id2", Addr: "[::1]:2222", User: "ubuntu", KeyFile: "/home/o'k/key", KnownHosts: "/k h"},
			`ssh -i '/home/o'\''k/key' -o IdentitiesOnly=yes -o UserKnownHostsFile='/k h' -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -p 2222 ubuntu@::1`,
			"github-runner-image-builder --os-cloud 'my cloud' sweep --prefix '' --server id2"},
		{KeptBuilder{Cloud: "a", Prefix: "p", Server: "id3"}, "", "github-runner-image-builder --os-cloud a sweep --prefix p --server id3"},
		{KeptBuilder{Cloud: "a", Prefix: "p", Server: "id4", Addr: "10.0.0.7:22", User: "ubuntu", KeyFile: "/k", KnownHosts: "/kh",
			Jump: SSHJump{Host: "ops@127.0.0.9:2222", Key: "/jk", KnownHosts: "/jkh"}},
			`ssh -i /k -o IdentitiesOnly=yes -o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o ProxyCommand='ssh -i /jk -o IdentitiesOnly=yes -o UserKnownHostsFile=/jkh -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -p 2222 -W %h:%p ops@127.0.0.9' -p 22 ubuntu@10.0.0.7`,
			"github-runner-image-builder --os-cloud a sweep --prefix p --server id4"},
		{KeptBuilder{Cloud: "a", Prefix: "p", Server: "id5", Addr: "10.0.0.7:22", User: "ubuntu", KeyFile: "/k", KnownHosts: "/kh",
			Jump: SSHJump{Host: "ops@bastion", KnownHosts: "/jkh"}},
			`ssh -i /k -o IdentitiesOnly=yes -o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o ProxyCommand='ssh -o UserKnownHostsFile=/jkh -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -p 22 -W %h:%p ops@bastion' -p 22 ubuntu@10.0.0.7`,
			"github-runner-image-builder --os-cloud a sweep --prefix p --server id5"},
	} {
		ssh, sweep := c.k.Commands()
		if ssh != c.ssh || sweep != c.sweep {
			t.Errorf("%+v:\n got %q\n     %q\nwant %q\n     %q", c.k, ssh, sweep, c.ssh, c.sweep)
		}
	}
}
