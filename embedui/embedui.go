// Package embedui holds the web UI's static files, embedded in the binary
// with go:embed so that the server needs nothing at run time. It has no
// build step. It serves files; it is not the API.
package embedui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the UI's files.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServerFS(sub)
}
