package imapd

import (
	"fmt"
	"testing"

	"github.com/emersion/go-message/textproto"
)

func TestTheHeaderCacheStaysWithinItsBoundAndKeepsWhatIsUsed(t *testing.T) {
	var c headerCache
	hdr := make([]byte, 4096)
	c.put("first", hdr, textproto.Header{})
	n := headerCacheBytes/entryCost(hdr, "sha000000") + 100
	for i := range n {
		c.put(fmt.Sprintf("sha%06d", i), hdr, textproto.Header{})
		if i%100 == 0 {
			if _, ok := c.get("first"); !ok {
				t.Fatalf("the entry used all along was evicted after %d puts", i)
			}
		}
	}
	if c.size > headerCacheBytes {
		t.Fatalf("cache holds %d bytes, bound %d", c.size, headerCacheBytes)
	}
	if _, ok := c.get("sha000000"); ok {
		t.Fatal("the oldest unused entry is still there")
	}
	c.put("huge", make([]byte, headerCacheBytes), textproto.Header{})
	if _, ok := c.get("huge"); ok {
		t.Fatal("an absurd header was cached")
	}
}
