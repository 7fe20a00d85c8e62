package cluster

import "sync"

// The locks that nest (see the list in leader.go) have ranks: a goroutine takes one only
// while every lock of rank it holds is of a lower rank. The package's tests check every
// acquisition (lockrank_internal_test.go sets lockHook); elsewhere the check is one nil
// test.

// lockRank is a lock's place in the order.
type lockRank uint8

const (
	rankTopicFan     lockRank = iota + 1 // topic.fan
	rankLocalSubs                        // localSubs.mu
	rankSubscription                     // Subscription.mu
)

// ranker names a rank as a type, so that a rankedMutex needs no setting up.
type ranker interface{ rank() lockRank }

type (
	topicFanRank     struct{}
	localSubsRank    struct{}
	subscriptionRank struct{}
)

func (topicFanRank) rank() lockRank     { return rankTopicFan }
func (localSubsRank) rank() lockRank    { return rankLocalSubs }
func (subscriptionRank) rank() lockRank { return rankSubscription }

// rankedMutex is a sync.Mutex of rank R.
type rankedMutex[R ranker] struct{ mu sync.Mutex }

func (m *rankedMutex[R]) Lock() {
	if h := lockHook; h != nil {
		var r R
		h(r.rank(), true)
	}
	m.mu.Lock()
}

func (m *rankedMutex[R]) Unlock() {
	m.mu.Unlock()
	if h := lockHook; h != nil {
		var r R
		h(r.rank(), false)
	}
}

// lockHook, when set (before any lock is taken, and never changed after), is told of
// every ranked lock a goroutine is about to take (taken) and has released.
var lockHook func(r lockRank, taken bool)
