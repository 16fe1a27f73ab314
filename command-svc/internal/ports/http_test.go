package ports

import (
	"net/http/httptest"
	"reflect"
	"testing"

	"profiles/command-svc/internal/app"
)

func TestIfMatchParsing(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   app.IfMatch
	}{
		{"absent", nil, app.IfMatch{}},
		{"star", []string{"*"}, app.IfMatch{Set: true, Any: true}},
		{"one tag", []string{`"3"`}, app.IfMatch{Set: true, Versions: []int64{3}}},
		{"list and repeated headers", []string{`"3", "4"`, `"9"`}, app.IfMatch{Set: true, Versions: []int64{3, 4, 9}}},
		{"weak tags never match", []string{`W/"3"`}, app.IfMatch{Set: true}},
		{"garbage never matches", []string{`3`, `"x"`}, app.IfMatch{Set: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("PUT", "/", nil)
			for _, v := range tt.values {
				r.Header.Add("If-Match", v)
			}
			if got := ifMatch(r); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ifMatch = %+v, want %+v", got, tt.want)
			}
		})
	}
}
