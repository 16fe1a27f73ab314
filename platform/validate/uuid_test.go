package validate

import (
	"math/rand/v2"
	"testing"
)

// isUUID accepts exactly what the validator's "required,uuid" accepts.
func TestIsUUIDIsTheValidatorsRule(t *testing.T) {
	cases := []string{"", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", "74292B21-0FBB-4F1D-A18F-FA80F947FA5D",
		"74292b21-0fbb-4f1d-a18f-fa80f947fa5", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d0", "74292b21_0fbb-4f1d-a18f-fa80f947fa5d",
		"74292b21-0fbb-4f1d-a18f-fa80f947fa5g", "74292b210fbb-4f1d-a18f-fa80f947fa5d-", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d\n",
		"7429２b21-0fbb-4f1d-a18f-fa80f947fa5d", "{4292b21-0fbb-4f1d-a18f-fa80f947fa5d}"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("0123456789abcdefABCDEFgG-_ \n\x00é")
	for range 20000 {
		b := []byte("74292b21-0fbb-4f1d-a18f-fa80f947fa5d")
		for range 1 + rng.IntN(2) {
			b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
		}
		if rng.IntN(10) == 0 {
			b = b[:rng.IntN(len(b))]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		if fast, slow := isUUID(s), v.Var(s, UIDTag) == nil; fast != slow {
			t.Fatalf("%q: isUUID %v, validator %v", s, fast, slow)
		}
	}
}
