package events

// EmailDelta returns the normalized emails whose email-index entry for the
// profile changes in the step from prev to next ("" for none): gained is
// next's email when next is live and prev was not, or held another email;
// lost is prev's email when prev was live and next is not, or holds
// another email. A change of case or surrounding space changes neither.
func EmailDelta(prev, next Profile) (gained, lost string) {
	was, is := "", ""
	if prev.Exists() {
		was = NormalizeEmail(prev.Email)
	}
	if next.Exists() {
		is = NormalizeEmail(next.Email)
	}
	if was == is {
		return "", ""
	}
	return is, was
}
