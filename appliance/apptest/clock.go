package apptest

import (
	"sync"
	"time"
)

// Clock is the time a test gives a component in place of time.Now: it
// stands still until the test moves it. Goroutines of the component may
// read it while the test moves it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock is a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time; pass the method value (clk.Now) where a
// component takes a func() time.Time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set puts the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// String is the clock's time in RFC 3339.
func (c *Clock) String() string { return c.Now().Format(time.RFC3339) }
