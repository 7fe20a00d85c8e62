//go:build !linux

package member

func setNoFile(uint64) error { return errNoFile }
