//go:build !linux

package cluster

// dirWatch is unavailable off Linux: a member retries at the pace of elect's backoff.
type dirWatch struct{}

func watchDir(string, *herald) *dirWatch { return nil }

func (*dirWatch) alive() bool { return false }

func (*dirWatch) remove(*herald) {}

// touchLock does nothing off Linux: no Follower watches Dir there.
func touchLock(string) {}
