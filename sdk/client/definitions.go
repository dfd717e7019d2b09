package client

import (
	"bytes"
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Definition is a registered definition version.
type Definition struct {
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	// Enabled is false once the version is disabled: no saga starts on it,
	// and it is never the latest.
	Enabled bool `json:"enabled"`
	// Definition is the canonical form: compact JSON with every default
	// written out.
	Definition json.RawMessage `json:"definition"`
	// ETag identifies the content; pass it to RegisterDefinitionIfMatch.
	ETag string `json:"-"`
}

// DefinitionSummary is a definition version in a listing.
type DefinitionSummary struct {
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	Enabled   bool      `json:"enabled"`
}

// DefinitionPage is a page of definitions, ordered by name, then version.
type DefinitionPage struct {
	Items []DefinitionSummary `json:"items"`
	// NextCursor fetches the next page; empty on the last one.
	NextCursor string `json:"next_cursor,omitempty"`
}

// DefinitionListOptions filters and pages a definition listing.
type DefinitionListOptions struct {
	Name   string // only this definition's versions
	Cursor string // NextCursor of the previous page
	Limit  int    // 1..500; 0: the server's default (50)
}

// Content types of a definition document.
const (
	ContentTypeJSON = "application/json"
	ContentTypeYAML = "application/yaml"
)

// RegisterDefinition registers a definition version written in JSON or YAML
// (contentType ContentTypeJSON or ContentTypeYAML; empty: JSON if the
// document starts with '{', else YAML). created is false when the identical version was registered
// already; other content under a registered name and version is a conflict
// (IsConflict).
func (c *Client) RegisterDefinition(ctx context.Context, doc []byte, contentType string) (def *Definition, created bool, err error) {
	return c.registerDefinition(ctx, doc, contentType, "")
}

// RegisterDefinitionIfMatch registers a definition version only if the
// latest version of its name still has the ETag etag (as read with
// GetDefinition): teams that evolve one definition do not overwrite each
// other's versions unseen. A mismatch is IsPreconditionFailed.
func (c *Client) RegisterDefinitionIfMatch(ctx context.Context, doc []byte, contentType, etag string) (def *Definition, created bool, err error) {
	return c.registerDefinition(ctx, doc, contentType, etag)
}

func (c *Client) registerDefinition(ctx context.Context, doc []byte, contentType, etag string) (*Definition, bool, error) {
	if contentType == "" {
		contentType = ContentTypeYAML
		if t := bytes.TrimLeft(doc, " \t\r\n"); len(t) > 0 && t[0] == '{' {
			contentType = ContentTypeJSON
		}
	}
	def := &Definition{}
	cl := &call{method: http.MethodPost, path: "/v1/definitions", body: doc, contentType: contentType, out: def, retry: retrySafe}
	if etag != "" {
		// A repeat of a registration that went through would fail its own
		// precondition; retry only calls the server refused.
		cl.header = http.Header{"If-Match": {etag}}
		cl.retry = retryRefused
	}
	res, err := c.do(ctx, cl)
	if err != nil {
		return nil, false, err
	}
	def.ETag = res.header.Get("ETag")
	return def, res.status == http.StatusCreated, nil
}

// GetDefinition returns a definition version; version 0 means the latest
// enabled version.
func (c *Client) GetDefinition(ctx context.Context, name string, version int) (*Definition, error) {
	path := "/v1/definitions/" + url.PathEscape(name)
	if version > 0 {
		path = definitionVersionPath(name, version)
	}
	def := &Definition{}
	res, err := c.do(ctx, &call{method: http.MethodGet, path: path, out: def})
	if err != nil {
		return nil, err
	}
	def.ETag = res.header.Get("ETag")
	return def, nil
}

// DisableDefinition disables a definition version: no saga starts on it
// (IsDefinitionDisabled), and the latest is the newest enabled version;
// sagas running on it go on. Disabling twice is harmless.
func (c *Client) DisableDefinition(ctx context.Context, name string, version int) (*Definition, error) {
	return c.setDefinitionState(ctx, name, version, "disable")
}

// EnableDefinition enables a disabled definition version again.
func (c *Client) EnableDefinition(ctx context.Context, name string, version int) (*Definition, error) {
	return c.setDefinitionState(ctx, name, version, "enable")
}

func (c *Client) setDefinitionState(ctx context.Context, name string, version int, action string) (*Definition, error) {
	def := &Definition{}
	res, err := c.do(ctx, &call{method: http.MethodPost, path: definitionVersionPath(name, version) + "/" + action, out: def, retry: retrySafe})
	if err != nil {
		return nil, err
	}
	def.ETag = res.header.Get("ETag")
	return def, nil
}

// DeleteDefinition deletes a definition version that no unfinished saga
// runs on; otherwise IsDefinitionInUse (DefinitionInUseCount says how many
// sagas). Ended sagas of the version stay readable. Registering the same
// content again brings the version back; other content under its number
// is a conflict.
func (c *Client) DeleteDefinition(ctx context.Context, name string, version int) error {
	_, err := c.do(ctx, &call{method: http.MethodDelete, path: definitionVersionPath(name, version), retry: retryRefused})
	return err
}

func definitionVersionPath(name string, version int) string {
	return "/v1/definitions/" + url.PathEscape(name) + "/versions/" + strconv.Itoa(version)
}

// ListDefinitions returns one page of definition versions.
func (c *Client) ListDefinitions(ctx context.Context, opts DefinitionListOptions) (*DefinitionPage, error) {
	q := url.Values{}
	if opts.Name != "" {
		q.Set("name", opts.Name)
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	page := &DefinitionPage{}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: "/v1/definitions", query: q, out: page}); err != nil {
		return nil, err
	}
	return page, nil
}

// DefinitionPages iterates over the pages of a definition listing, from
// opts.Cursor on; it stops after the last page or the first error.
func (c *Client) DefinitionPages(ctx context.Context, opts DefinitionListOptions) iter.Seq2[*DefinitionPage, error] {
	return func(yield func(*DefinitionPage, error) bool) {
		for {
			page, err := c.ListDefinitions(ctx, opts)
			if !yield(page, err) || err != nil || page.NextCursor == "" {
				return
			}
			opts.Cursor = page.NextCursor
		}
	}
}
