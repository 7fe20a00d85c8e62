package cluster

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every test of the package, and every member process it starts, checks the order of
// the ranked locks at each acquisition: taking one out of order panics.
func init() { lockHook = checkLockOrder }

var ranksHeld = struct {
	sync.Mutex
	by map[uint64][]lockRank // by goroutine, in the order taken
}{by: make(map[uint64][]lockRank)}

func checkLockOrder(r lockRank, taken bool) {
	g := goroutineID()
	ranksHeld.Lock()
	defer ranksHeld.Unlock()
	held := ranksHeld.by[g]
	if !taken {
		for i := len(held) - 1; i >= 0; i-- {
			if held[i] == r {
				held = append(held[:i], held[i+1:]...)
				break
			}
		}
		if len(held) == 0 {
			delete(ranksHeld.by, g)
		} else {
			ranksHeld.by[g] = held
		}
		return
	}
	if n := len(held); n > 0 && held[n-1] >= r {
		panic(fmt.Sprintf("cluster: lock of rank %d taken while holding one of rank %d (see the order in leader.go)", r, held[n-1]))
	}
	ranksHeld.by[g] = append(held, r)
}

func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, err := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	if err != nil {
		panic(err)
	}
	return id
}

func TestLockOrderIsChecked(t *testing.T) {
	require.NotNil(t, lockHook)
	var fan rankedMutex[topicFanRank]
	var subs rankedMutex[localSubsRank]
	var sub rankedMutex[subscriptionRank]
	// In order: fine.
	fan.Lock()
	subs.Lock()
	sub.Lock()
	sub.Unlock()
	subs.Unlock()
	fan.Unlock()
	// Out of order: refused before it can deadlock.
	sub.Lock()
	require.Panics(t, fan.Lock)
	require.Panics(t, subs.Lock)
	sub.Unlock()
	fan.Lock()
	require.Panics(t, fan.Lock, "a lock is not taken twice")
	fan.Unlock()
}
