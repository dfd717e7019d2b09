package api

import (
	"strconv"
	"strings"
	"time"
)

// etag quotes an opaque tag.
func etag(tag string) string { return `"` + tag + `"` }

// sagaETag identifies a saga's state: the record's update time changes
// with every commit that changes the saga.
func sagaETag(updatedAt time.Time) string {
	return etag(strconv.FormatInt(updatedAt.UnixNano(), 36))
}

// etagMatch reports whether an If-Match or If-None-Match header matches
// tag. If-None-Match compares weakly (a W/ prefix is ignored), If-Match
// strongly (a weak tag never matches); "*" matches any current tag.
func etagMatch(header, tag string, weak bool) bool {
	for part := range strings.SplitSeq(header, ",") {
		p := strings.TrimSpace(part)
		if p == "*" {
			return true
		}
		if after, ok := strings.CutPrefix(p, "W/"); ok {
			if !weak {
				continue
			}
			p = after
		}
		if p == tag {
			return true
		}
	}
	return false
}
