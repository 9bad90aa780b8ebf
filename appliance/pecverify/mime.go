package pecverify

import (
	"sigillo/appliance/signer"
)

// Limits that keep a hostile message from costing more than a bounded amount
// of memory and time. They are far above anything a gestore writes. The
// limits of the MIME parsing and of the signature are signer's.
const (
	// MaxMessageSize is the largest message Verify looks at (the law asks a
	// gestore to carry 30 MB × recipients; a single stored message is smaller).
	MaxMessageSize = signer.MaxMessageSize
	maxParts       = 10000   // body parts examined in one message, all levels together
	maxDepth       = 16      // multipart nesting followed while looking for daticert.xml
	maxDaticert    = 1 << 20 // decoded daticert.xml
)

// fileName returns the name the entity gives itself: the filename parameter
// of Content-Disposition or the name parameter of Content-Type.
func fileName(h signer.Header, ctParams map[string]string) string {
	if _, p := signer.ParseParams(h.Get("content-disposition")); p["filename"] != "" {
		return p["filename"]
	}
	return ctParams["name"]
}
